"""The run state as checkpoint data, and back [ours; docs/algorithms.md §10].

A checkpoint holds ``RunState`` as plain data: its dataclasses by name (only those listed in
``STATE_TYPES`` can be built back), the client store as its index (two int64 arrays, client and
version: the states themselves are in the store's files), and the run's config. Resuming picks
the newest checkpoint that is intact, its client-state files included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedlora_ray.algorithm.server_opt import ServerOptState
from fedlora_ray.algorithm.state import RunState
from fedlora_ray.control.adaptive import AdaptivePlan
from fedlora_ray.control.base import ControllerState
from fedlora_ray.engine.client_store import ClientStateFiles, ClientStore, restored_store
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.run_errors import DamagedFileError
from fedlora_ray.rundir.checkpoint import load_checkpoint, newest_intact, save_checkpoint


@dataclass(frozen=True)
class ClientIndex:
    """The client store as a checkpoint holds it: client -> the round that wrote its state."""

    clients: np.ndarray  # int64
    versions: np.ndarray  # int64
    budget_bytes: float


STATE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (RunState, Adapter, ServerOptState, ControllerState, AdaptivePlan, ClientIndex)
}


def save_state(run_dir: str | Path, state: RunState, config: dict[str, Any], keep: int) -> Path:
    """Write ``state`` (its client store persisted first) as the checkpoint of its round."""
    store = state.clients
    assert isinstance(store, ClientStore)
    versions = store.versions()
    index = ClientIndex(
        np.fromiter(versions.keys(), np.int64, len(versions)),
        np.fromiter(versions.values(), np.int64, len(versions)),
        float(store.budget_bytes),
    )
    tree = {"state": dataclasses.replace(state, clients=index), "config": config}  # type: ignore[arg-type]
    return save_checkpoint(run_dir, state.round, tree, STATE_TYPES, keep)


def load_state(path: Path, store_dir: Path | None) -> RunState:
    """The run state of checkpoint ``path``, verified, with the client store as its index; the
    client-state files it refers to must be in ``store_dir`` (else DamagedFileError: the
    checkpoint cannot be resumed)."""
    state: RunState = load_checkpoint(path, STATE_TYPES)["state"]
    index = state.clients
    assert isinstance(index, ClientIndex)
    live = dict(zip(index.clients.tolist(), index.versions.tolist()))
    if live and store_dir is not None:
        files = ClientStateFiles(store_dir)
        for c, v in live.items():  # each read checks the file (missing, cut short, changed): all once
            try:
                files.read(c, v)
            except DamagedFileError as err:
                raise DamagedFileError(
                    path, f"refers to a damaged client-state file, {err.path}: {err.problem}"
                ) from None
    return dataclasses.replace(state, clients=restored_store(live, index.budget_bytes))


def resume_state(run_dir: Path, store_dir: Path | None, say: Callable[[str], None]) -> RunState | None:
    """The state of the newest intact checkpoint of ``run_dir`` (None when it has none); damaged
    newer ones are named and set aside (``newest_intact``)."""
    found = newest_intact(run_dir, lambda path: load_state(path, store_dir), say)
    return None if found is None else found[1]
