"""Checks of a run config against its data and its base model, and what a run reads once.

``validate_run_config`` (fedlora_ray.components) checks each field on its own, the rules
between fields and each component's own rules. Here:
- ``check_data`` reads the training labels and draws the partition, once, in the launching
  process and before Ray starts (numpy only); the run gets the result (``ClientData``);
- ``check_model`` reads the base model's module names and shapes (from a weightless copy on the
  meta device: no weights load); the client trainer runs it where it builds the model, so the
  launching process never loads torch or transformers;
- ``resume_config`` is a resume's one read of a run folder's config.json (a path or a URI).
Each raises ConfigError naming the field, the value and what is allowed, before any training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedlora_ray.components import load_run_config
from fedlora_ray.config import ConfigError, RunConfig, parse_override
from fedlora_ray.control import controller_class
from fedlora_ray.data import partition_indices
from fedlora_ray.rundir.checkpoint import checkpoint_rounds
from fedlora_ray.storage import read_text
from fedlora_ray.tasks import DATASETS, load_splits, model_family
from fedlora_ray.tasks.base import targets

_MAX_LISTED = 8  # allowed module names listed in a message


@dataclass(frozen=True)
class ClientData:
    """What the driver needs of the training split, read and dealt once, before any work: the
    label names and each client's training example indices (docs/algorithms.md §8). The
    examples themselves stay with the client trainers."""

    label_names: tuple[str, ...]
    partition: list[np.ndarray]


def check_run(cfg: RunConfig) -> ClientData:
    """Raise ConfigError when ``cfg`` cannot run on its base model and data; else the clients'
    data. (A run checks the model where it builds it, in the client trainer.)"""
    data = check_data(cfg)  # first: it needs numpy only, the model check imports transformers (seconds)
    check_model(cfg)
    return data


def check_model(cfg: RunConfig) -> None:
    """model.target_modules name linear modules of the base model, and the LoRA rank fits them."""
    model = cfg.model
    family = model_family(model.name)
    modules = family.linear_modules(model)
    wanted = family.lora_targets(model)
    targeted = {name: dk for name, dk in modules.items() if targets(name, wanted)}
    for i, t in enumerate(wanted):
        if not any(targets(name, (t,)) for name in modules):
            short = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in modules))
            allowed = ", ".join(repr(n) for n in short[:_MAX_LISTED])
            example = next(iter(modules))
            field = family.targets_field
            where = (
                f"config field '{field}[{i}]' ="
                if field == "model.target_modules"
                else (f"config field '{field}' gives the LoRA target")
            )
            raise ConfigError(
                f"{where} {t!r}: no linear module of the "
                f"{model.name!r} base model has that name; allowed are its linear modules' names, "
                f"{allowed}{', ...' if len(short) > _MAX_LISTED else ''} (or a dotted tail of a "
                f"full name such as {example!r})"
            )
    limit = min(min(dk) for dk in targeted.values())
    # TSFA replaces model.lora_rank by its offline choice r* in 1..controller.max_rank (and its
    # pilot calibration trains at rank controller.max_rank), so max_rank is what must fit then.
    if controller_class(cfg.controller.kind).chooses_rank:
        field, rank = "controller.max_rank", cfg.controller.max_rank
    else:
        field, rank = "model.lora_rank", model.lora_rank
    if rank > limit:
        names = ", ".join(repr(t) for t in wanted)
        raise ConfigError(
            f"config field '{field}' = {rank}: must be <= {limit}, the smallest dimension "
            f"(min of in and out features) of the targeted modules {names} of the "
            f"{model.name!r} base model"
        )


def check_data(cfg: RunConfig) -> ClientData:
    """The training split serves every client at least data.min_examples_per_client examples
    under the configured partition (docs/algorithms.md §8): the partition itself is drawn, from
    the labels only, and refuses with a ConfigError saying how many clients the data can serve.
    The run uses this partition: it is drawn once."""
    fed, data = cfg.federation, cfg.data
    try:
        train, _ = load_splits(data)
    except ConfigError:
        raise  # the loader named its own field
    except ValueError as err:  # a category with no more glosses than data.test_per_class
        raise ConfigError(f"config field 'data.test_per_class' = {data.test_per_class}: {err}") from None
    try:
        partition = partition_indices(train.labels, fed.num_clients, data, fed.seed)
    except ConfigError as err:  # the partition knows the counts; the dataset knows its size fields
        more = DATASETS[data.dataset].more_examples(data)
        raise ConfigError(f"{err} ({more})" if more else str(err)) from None
    return ClientData(tuple(train.label_names), partition)


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The run directory's config (a folder or a URI), which is authoritative, checked as every
    run's is (``load_run_config``). Only ``federation.rounds`` may be set (to extend a run); any
    other override is refused. The one read of config.json a resume makes."""
    where = f"{run_dir}/config.json"
    try:
        text = read_text(str(run_dir), "config.json")
    except OSError as err:
        raise ConfigError(f"{where} cannot be read: {err}") from None
    if text is None:
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.json)")
    cfg = load_run_config(None, base=json.loads(text))
    for text in overrides:
        keys, _ = parse_override(text)
        if ".".join(keys) != "federation.rounds":
            raise ConfigError(
                f"override {text!r}: a resumed run keeps the config in {where}; only "
                "federation.rounds may change (to extend the run). Start a new run for other settings"
            )
    new = load_run_config(None, overrides, base=cfg.to_dict()) if overrides else cfg
    done = max(checkpoint_rounds(run_dir), default=0)
    if new.federation.rounds < done:
        raise ConfigError(
            f"config field 'federation.rounds' = {new.federation.rounds}: the run has a checkpoint at "
            f"round {done}; a resumed run can only be extended"
        )
    return new
