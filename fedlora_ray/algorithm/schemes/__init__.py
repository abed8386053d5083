"""Federated LoRA schemes, one module per ``algorithm.kind``: fedavg (with its uplink
compressors), fslora, hetlora and ffa. ``SCHEMES`` maps each name to a light entry
(``SchemeSpec``: its config rules, and its class, loaded when a run builds the scheme).

Importing the package registers the built-ins (``builtin``) without torch; the scheme classes
(``Scheme`` and the rest of ``base``) are imported when first used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedlora_ray.algorithm.schemes import builtin  # noqa: F401  (registers fedavg, fslora, hetlora, ffa)
from fedlora_ray.algorithm.schemes.registry import (
    SCHEMES,
    SchemeSpec,
    make_scheme,
    register_scheme,
    scheme_class,
)

if TYPE_CHECKING:
    from fedlora_ray.algorithm.schemes.base import Scheme, draw_client_ratios

__all__ = [
    "SCHEMES", "Scheme", "SchemeSpec", "draw_client_ratios", "make_scheme", "register_scheme",
    "scheme_class",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    # the scheme classes import torch: loaded where a scheme is built, not with the registry
    if name in ("Scheme", "draw_client_ratios"):
        from fedlora_ray.algorithm.schemes import base

        return getattr(base, name)
    raise AttributeError(f"module 'fedlora_ray.algorithm.schemes' has no attribute {name!r}")
