"""Checkpoints of the run state: RUN_DIR/checkpoint/round-NNNNNN.safetensors.

Each is a tensor file (``tensor_file``: safetensors, versioned JSON in its header, a checksum
checked on load, no pickle), written to a temporary file and renamed, so a checkpoint on disk is
always whole; the newest ``keep`` are kept, older ones deleted only after a newer one is complete
[docs/algorithms.md §10]. ``newest_intact`` picks the checkpoint a resume starts from: the newest
that passes its check, naming each newer one that does not.

Checkpoints of format 1 (``round-NNNNNN.pt``, a torch pickle) are listed, so that a resume can
name them, and refused: loading them would run a pickle.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedlora_ray.run_errors import DamagedFileError
from fedlora_ray.rundir.tensor_file import FORMAT_VERSION, read_tensor_file, write_tensor_file
from fedlora_ray.storage import list_names

CHECKPOINT_DIR = "checkpoint"
KIND = "checkpoint"
_NAME = re.compile(r"^round-(\d{6,})\.safetensors$")
_FORMAT_1 = re.compile(r"^round-(\d{6,})\.pt$")


def checkpoint_round(path: Path) -> int:
    """The round a checkpoint file holds, from its name."""
    match = _NAME.match(path.name) or _FORMAT_1.match(path.name)
    if match is None:
        raise ValueError(f"{path}: not a checkpoint file name (round-NNNNNN.safetensors)")
    return int(match.group(1))


def _rounds(place: str | Path, pattern: re.Pattern[str]) -> list[int]:
    names = list_names(str(place), CHECKPOINT_DIR)
    return sorted(int(m.group(1)) for name in names if (m := pattern.match(name)))


def checkpoint_rounds(place: str | Path) -> list[int]:
    """The rounds of the checkpoints of a run folder or URI, oldest first (unchecked)."""
    return _rounds(place, _NAME)


def checkpoint_path(run_dir: str | Path, round_: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"round-{round_:06d}.safetensors"


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints of a run directory, oldest first (unchecked)."""
    return [checkpoint_path(run_dir, r) for r in checkpoint_rounds(run_dir)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: str | Path, round_: int, tree: dict[str, Any], types: Mapping[str, type], keep: int = 2
) -> Path:
    """``tree`` (the run state and its config, as plain data, tensors and the ``types``
    dataclasses) as the checkpoint of ``round_``; then the oldest beyond ``keep`` go."""
    path = checkpoint_path(run_dir, round_)
    write_tensor_file(path, {"round": round_, **tree}, KIND, types)
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, types: Mapping[str, type]) -> dict[str, Any]:
    """A checkpoint's tree, verified (DamagedFileError when it is not whole and unchanged)."""
    tree: dict[str, Any] = read_tensor_file(path, KIND, types)
    if tree.get("round") != checkpoint_round(Path(path)):
        raise DamagedFileError(path, f"holds round {tree.get('round')}, not the round its name says")
    return tree


def refuse_format_1(run_dir: str | Path) -> None:
    """Raise DamagedFileError when the newest checkpoint of ``run_dir`` is of format 1."""
    old, new = _rounds(run_dir, _FORMAT_1), checkpoint_rounds(run_dir)
    if old and (not new or old[-1] > new[-1]):
        path = Path(run_dir) / CHECKPOINT_DIR / f"round-{old[-1]:06d}.pt"
        raise DamagedFileError(
            path,
            f"a checkpoint of format 1 (a torch pickle); this version reads format {FORMAT_VERSION} "
            "(safetensors with a checksum) and never loads a pickle",
            "finish the run with the fedlora-ray version that started it (0.1.0), or start it again",
        )


def newest_intact(
    run_dir: str | Path, load: Callable[[Path], Any], say: Callable[[str], None]
) -> tuple[Path, Any] | None:
    """(path, ``load(path)``) of the newest checkpoint that loads, or None when the run has
    none. A damaged newer one is named through ``say``, one line each, and moved aside to
    checkpoint/damaged/ (kept for the user; out of the listing, so that the run's own
    checkpoints replace it). With checkpoints but none intact: DamagedFileError, nothing
    changed."""
    refuse_format_1(run_dir)
    found = checkpoints(run_dir)
    damaged: list[tuple[Path, DamagedFileError]] = []
    for path in reversed(found):
        try:
            loaded = load(path)
        except DamagedFileError as err:
            damaged.append((path, err))
            continue
        for bad, damage in damaged:
            say(f"checkpoint {bad} is damaged ({damage.problem}): moved to {CHECKPOINT_DIR}/damaged/")
            aside = bad.parent / "damaged" / bad.name
            aside.parent.mkdir(exist_ok=True)
            bad.replace(aside)
        if damaged:
            say(f"resuming from {path}, the newest intact checkpoint")
        return path, loaded
    if damaged:
        bad, first = damaged[0]
        names = ", ".join(p.name for p, _ in damaged)
        raise DamagedFileError(
            bad, f"{first.problem}; no checkpoint of the run is intact ({names})",
            "nothing was changed; start the run again (its config is config.json)",
        )  # fmt: skip
    return None


def checkpoint_config(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(path, the run's config) of the newest intact checkpoint of a local run folder, None when
    none is intact: what restores a damaged config.json."""
    for path in reversed(checkpoints(run_dir)):
        try:
            tree = read_tensor_file(path, KIND, types=None)
        except DamagedFileError:
            continue
        return path, tree["config"]
    return None
