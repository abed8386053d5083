"""The composition root: which components a run can be made of, and whether a config's choice
of them can run.

A config names five components: its dataset (``data.dataset``), model family (``model.name``),
scheme (``algorithm.kind``), uplink compressor (``compression.method``) and controller
(``controller.kind``). Their registries live with them (``fedlora_ray.tasks``,
``fedlora_ray.algorithm.schemes``, ``fedlora_ray.compress``, ``fedlora_ray.control``), and each
package registers its built-ins when it is imported, so importing this module loads them all.
This is the one place a run's config is checked against them. ``validate_run_config``:

1. runs the config's own rules (``fedlora_ray.config.validate``: types, ranges, the rules that
   tie fields together);
2. checks that each name is registered, naming the field, the value and the registered names;
3. checks that the model family takes the dataset's kind of examples;
4. asks each named component to check its own fields (a scheme's or controller's ``validate``
   classmethod, a dataset's, model family's or compressor's ``validate`` hook), as peft's
   ``LoraConfig`` checks its own; WordNet's rules, for example, are the WordNet task's.

Nothing here imports torch or a model library: the registries hold light entries (a
controller class, or a spec with the component's rules and facts), and a component's
implementation is imported when a run builds it. Every config that reaches a run comes through
``load_run_config`` (a YAML file and overrides, or a run directory's config.json) or
``validate_run_config`` (a config built otherwise). The checks that need the base model's
shapes or the data are ``fedlora_ray.preflight``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedlora_ray.algorithm.schemes import SCHEMES
from fedlora_ray.compress import COMPRESSORS
from fedlora_ray.config import ConfigError, RunConfig, allowed_values, load_config, validate
from fedlora_ray.control import CONTROLLERS
from fedlora_ray.tasks import DATASETS, MODELS

# The config fields that name a component, each with the registry that holds the names, in the
# order they are checked.
REGISTRIES: dict[str, Mapping[str, Any]] = {
    "data.dataset": DATASETS,
    "model.name": MODELS,
    "algorithm.kind": SCHEMES,
    "compression.method": COMPRESSORS,
    "controller.kind": CONTROLLERS,
}


def registered_names() -> dict[str, tuple[str, ...]]:
    """For each field that names a component, the names its registry holds now (the built-ins
    first, then those registered by the user, in registration order)."""
    return {path: tuple(registry) for path, registry in REGISTRIES.items()}


def _value(cfg: RunConfig, path: str) -> Any:
    section, name = path.split(".")
    return getattr(getattr(cfg, section), name)


def validate_run_config(cfg: RunConfig) -> RunConfig:
    """Check ``cfg`` as a run needs it (see the module's docstring); return it, or raise
    ConfigError naming the field, the value and what is allowed."""
    validate(cfg)
    for path, registry in REGISTRIES.items():
        name = _value(cfg, path)
        if name not in registry:
            raise allowed_values(path, name, registry)
    data, model = DATASETS[cfg.data.dataset], MODELS[cfg.model.name]
    if model.modality != data.modality:
        raise ConfigError(
            f"config field 'model.name' = {cfg.model.name!r}: a {model.modality} model cannot train on "
            f"data.dataset = {cfg.data.dataset!r}, which holds {data.modality}"
        )
    own_rules: list[Callable[[RunConfig], None] | None] = [
        data.validate,
        model.validate,
        SCHEMES[cfg.algorithm.kind].validate,
        COMPRESSORS[cfg.compression.method].validate,
        CONTROLLERS[cfg.controller.kind].validate,
    ]
    for rules in own_rules:
        if rules is not None:
            rules(cfg)
    return cfg


def load_run_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Read a YAML file (or start from ``base``, e.g. a run's config.json), apply ``a.b=value``
    overrides, and check the result as a run needs it (``validate_run_config``)."""
    return validate_run_config(load_config(path, overrides, base))
