"""The ``algorithm.kind`` registry: one light entry per scheme.

A ``SchemeSpec`` holds the scheme's rules on the config, read without torch, and loads the
scheme's class (``fedlora_ray.algorithm.schemes.base``, torch) when a run builds it. The
built-in schemes are listed in ``fedlora_ray.algorithm.schemes.builtin``; ``register_scheme``
adds one from its class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedlora_ray.config import RunConfig

if TYPE_CHECKING:
    from fedlora_ray.algorithm.schemes.base import Scheme


@dataclass(frozen=True)
class SchemeSpec:
    """A scheme as the registry holds it: ``validate`` raises ConfigError for settings the scheme
    cannot run with; ``load`` returns its class."""

    validate: Callable[[RunConfig], None]
    load: Callable[[], type[Scheme]]


SCHEMES: dict[str, SchemeSpec] = {}


def register_scheme(cls: type[Scheme]) -> type[Scheme]:
    """Class decorator: make ``algorithm.kind: cls.name`` available; the class's ``validate``
    classmethod checks every config that names it."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty name")
    SCHEMES[cls.name] = SchemeSpec(cls.validate, lambda: cls)
    return cls


def scheme_class(name: str) -> type[Scheme]:
    return SCHEMES[name].load()


def make_scheme(cfg: RunConfig) -> Scheme:
    return scheme_class(cfg.algorithm.kind)(cfg)
