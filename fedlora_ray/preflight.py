"""Checks of a run config against its data and its base model, and what a run reads once.

``validate_run_config`` (fedlora_ray.components) checks each field on its own, the rules
between fields and each component's own rules. Here:
- ``check_data`` reads the training labels and draws the partition, once, in the launching
  process and before Ray starts (numpy only); the run gets the result (``ClientData``);
- ``check_model`` reads the base model's module names and shapes (from a weightless copy on the
  meta device: no weights load); the client trainer runs it where it builds the model, so the
  launching process never loads torch or transformers;
- ``check_upload_budget`` refuses a fixed keep ratio whose budget sends no LoRA entry, once the
  modules' shapes are known (``check_model`` runs it; controller-only mode too);
- ``check_precision`` refuses bf16 where the forward passes would run on a CPU (the launcher runs
  it before Ray starts);
- ``resume_config`` is a resume's one read of a run folder's config.json (a path or a URI).
Each raises ConfigError naming the field, the value and what is allowed, before any training.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedlora_ray.atomic_write import write_bytes
from fedlora_ray.components import load_run_config
from fedlora_ray.compress import COMPRESSORS, upload_model
from fedlora_ray.compress.bits import Dims, module_budget, nearest_component_upload, whole_component_upload
from fedlora_ray.config import ConfigError, RunConfig, parse_override
from fedlora_ray.control import controller_class
from fedlora_ray.control.base import Controller
from fedlora_ray.data import partition_indices
from fedlora_ray.run_errors import DamagedFileError
from fedlora_ray.rundir.checkpoint import checkpoint_rounds
from fedlora_ray.storage import is_uri, read_json
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
    check_upload_budget(cfg, list(targeted.values()))


def _smallest_ratio(sends: Callable[[float], bool]) -> float:
    """The smallest keep ratio in (0, 1] for which ``sends`` holds (it is monotone in the ratio),
    rounded up to three significant digits so that the figure shown is itself enough."""
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if sends(mid) else (mid, hi)
    scale = 10.0 ** (2 - math.floor(math.log10(hi)))
    shown = min(1.0, math.ceil(hi * scale) / scale)
    return shown if sends(shown) else hi


def check_upload_budget(cfg: RunConfig, dims: Dims) -> None:
    """Refuse a fixed keep ratio whose budget sends no LoRA entry: round(rho r (d + k)) = 0 for
    some module (for FLASC's global scope: for all of them), or, for FedLoDrop, less than one
    whole component (less than half of one with ``compression.fedlodrop_rounding = nearest``,
    docs/algorithms.md §3), unless ``compression.allow_empty_upload`` [docs/algorithms.md §9, ours].
    ``dims``: the (d, k) of every module LoRA targets. The payload model is the compressor's own
    (``module_upload``), so a registered method is checked by what it would send. Controllers
    that choose the ratio each round (OSFA, TSFA) are not checked: their choice is their own."""
    comp, rank = cfg.compression, cfg.model.lora_rank
    if comp.allow_empty_upload or COMPRESSORS[comp.method].dense or not dims:
        return
    if controller_class(cfg.controller.kind).keep_ratio is not Controller.keep_ratio:
        return
    upload = upload_model(comp)  # FedLoDrop's components counted by compression.fedlodrop_rounding
    shapes = sorted(set(dims))
    pooled = COMPRESSORS[comp.method].pools_budget(comp)  # one budget over all modules

    def entries(rho: float) -> list[int]:
        return [upload(d, k, rank, rank, rho, comp.value_bits)[0] for d, k in shapes]

    def sends(rho: float) -> bool:
        sent = entries(rho)
        return sum(sent) >= 1 if pooled else min(sent) >= 1

    if sends(comp.keep_ratio):
        return
    rho = comp.keep_ratio
    d, k = next(dk for dk, n in zip(shapes, entries(rho)) if n == 0)
    budget = f"K_m = round({rho:g} x {rank} x ({d} + {k})) = {module_budget(rho, d, k, rank)} entries"
    why = (
        f"{budget}, less than {'half a' if comp.fedlodrop_rounding == 'nearest' else 'one whole'} "
        f"rank component ({d + k} entries)"
        if upload in (whole_component_upload, nearest_component_upload)
        else budget
    )
    where = "in all modules together" if pooled else "in every targeted module"
    smallest = (
        f"The smallest keep ratio that sends something {where} is {_smallest_ratio(sends):g}"
        if sends(1.0)  # a registered method might send nothing at any ratio
        else f"No keep ratio in (0, 1] sends something {where}"
    )
    raise ConfigError(
        f"config field 'compression.keep_ratio' = {rho:g}: compression.method {comp.method!r} "
        f"would send no LoRA entry of the {d} x {k} modules at rank {rank} ({why}). {smallest}; "
        "set compression.allow_empty_upload=true to run the empty upload anyway"
    )


def check_precision(cfg: RunConfig) -> None:
    """Refuse ``runtime.precision = bf16`` where the forward passes would run on a CPU: client
    actors without a GPU share (Ray gives them no GPU), or a serial run whose device is the CPU
    (``auto`` without CUDA). On a CPU bf16 autocast is no faster (measured slower on the smoke
    config) and its numbers no longer match the fp32 reference [docs/algorithms.md §9, ours].
    Not part of the config's own rules: a benchmark may still evaluate bf16 on a CPU by hand."""
    rt = cfg.runtime
    if rt.precision != "bf16":
        return
    if rt.backend == "ray":
        if rt.num_gpus_per_actor > 0:
            return
        where = "the client actors run on CPUs (runtime.num_gpus_per_actor = 0)"
    elif rt.device == "cuda":
        return
    elif rt.device == "cpu":
        where = "the serial backend runs on the CPU (runtime.device = 'cpu')"
    else:
        import torch  # the serial run loads it in this process anyway

        if torch.cuda.is_available():
            return
        where = "the serial backend runs on the CPU (runtime.device = 'auto' and no CUDA device here)"
    raise ConfigError(
        f"config field 'runtime.precision' = 'bf16': {where}; bf16 is for GPUs (on a CPU it is no "
        "faster and its numbers differ from the fp32 reference). Use runtime.precision=fp32, or give "
        "the run a GPU"
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


def _restore_config(run_dir: str | Path, damage: DamagedFileError) -> dict[str, Any]:
    """A damaged config.json written again from the config its newest intact checkpoint holds
    (verified data), saying so; without one, the damage is raised with what to do."""
    from fedlora_ray.rundir.checkpoint import checkpoint_config  # torch: only on this rare path

    found = None if is_uri(str(run_dir)) else checkpoint_config(run_dir)
    if found is None:
        raise DamagedFileError(
            damage.path, damage.problem, "no intact checkpoint holds the config: restore the file from a "
            "copy, or start the run again",
        )  # fmt: skip
    path, config = found
    write_bytes(Path(run_dir) / "config.json", json.dumps(config, indent=2, sort_keys=True).encode())
    said = f"fedlora-ray: {damage.path} was damaged ({damage.problem}); written again from {path}"
    print(said, file=sys.stderr)
    return config


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The run directory's config (a folder or a URI), which is authoritative, checked as every
    run's is (``load_run_config``). Only ``federation.rounds`` may be set (to extend a run); any
    other override is refused. The one read of config.json a resume makes."""
    where = f"{run_dir}/config.json"
    try:
        stored = read_json(str(run_dir), "config.json")
    except DamagedFileError as err:
        stored = _restore_config(run_dir, err)
    if stored is None:
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.json)")
    cfg = load_run_config(None, base=stored)
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
