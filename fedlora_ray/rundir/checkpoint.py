"""Checkpoints of the run state: RUN_DIR/checkpoint/round-NNNNNN.pt.

Written to a temporary file and renamed, so a checkpoint on disk is always whole; the newest
``keep`` are kept, older ones deleted only after a newer one is complete [docs/algorithms.md §10].
The file is a torch pickle of plain containers (tensors, numpy arrays, numbers, the run state's
dataclasses): it is written and read by this package only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from fedlora_ray.atomic_write import atomic_path

CHECKPOINT_DIR = "checkpoint"
_NAME = re.compile(r"^round-(\d{6,})\.pt$")
FORMAT = 1


def checkpoint_round(path: Path) -> int:
    """The round a checkpoint file holds, from its name."""
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: not a checkpoint file name (round-NNNNNN.pt)")
    return int(match.group(1))


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run directory, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, round_: int, payload: dict[str, Any], keep: int = 2) -> Path:
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round-{round_:06d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "round": round_, **payload}, tmp)
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    data = torch.load(path, map_location="cpu", weights_only=False)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {data.get('format')!r}, this version reads {FORMAT}")
    return data
