"""Checkpoints of the run state: RUN_DIR/checkpoint/round-NNNNNN.pt.

Written to a temporary file and renamed, so a checkpoint on disk is always whole; the newest
``keep`` are kept, older ones deleted only after a newer one is complete [docs/algorithms.md §10].
The file is a torch pickle of plain containers (tensors, numpy arrays, numbers, the run state's
dataclasses): it is written and read by this package only.
"""

from __future__ import annotations

import pickle
import re
import types
from pathlib import Path
from typing import Any

from fedlora_ray.atomic_write import atomic_path
from fedlora_ray.storage import list_names

CHECKPOINT_DIR = "checkpoint"
_NAME = re.compile(r"^round-(\d{6,})\.pt$")
FORMAT = 1


def checkpoint_round(path: Path) -> int:
    """The round a checkpoint file holds, from its name."""
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: not a checkpoint file name (round-NNNNNN.pt)")
    return int(match.group(1))


def checkpoint_rounds(place: str | Path) -> list[int]:
    """The rounds of the complete checkpoints of a run folder or URI, oldest first."""
    return sorted(
        int(m.group(1)) for name in list_names(str(place), CHECKPOINT_DIR) if (m := _NAME.match(name))
    )


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run directory, oldest first."""
    return [Path(run_dir) / CHECKPOINT_DIR / f"round-{r:06d}.pt" for r in checkpoint_rounds(run_dir)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, round_: int, payload: dict[str, Any], keep: int = 2) -> Path:
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round-{round_:06d}.pt"
    import torch  # here, not at the top: reading a run's checkpoint list needs no torch

    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "round": round_, **payload}, tmp)
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


# Modules that moved since checkpoints were first written, so that a run started before a move
# resumes after it (the pickle names a class by its module).
_MOVED = {"fedlora_ray.algorithm.client_store": "fedlora_ray.engine.client_store"}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED.get(module, module), name)


_moved_classes = types.SimpleNamespace(__name__="pickle", Unpickler=_Unpickler, load=pickle.load)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    data = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_moved_classes)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {data.get('format')!r}, this version reads {FORMAT}")
    return data
