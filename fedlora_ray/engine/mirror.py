"""A run whose folder is a URI: it runs in a local staging copy that is pushed after every round.

docs/algorithms.md has nothing to say here; this is plumbing (``fedlora_ray.storage``).
"""

from __future__ import annotations

from pathlib import Path

from fedlora_ray.engine.callbacks import Callback
from fedlora_ray.storage import Mirror, is_uri


class PushToURI(Callback):
    """After each round (logs and checkpoints are on the staging disk by then) and at the end
    (adapter, summary.json), send what changed."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def on_round_end(self, run, state, row, client_rows):  # type: ignore[no-untyped-def]
        self.mirror.push()

    def on_run_end(self, run, state, summary):  # type: ignore[no-untyped-def]
        self.mirror.push()


def stage(run_dir: str | Path | None) -> tuple[str | Path | None, list[Callback]]:
    """(the folder the run writes, the callbacks that copy it out): ``run_dir`` itself for a
    path; for a URI, its staging copy pulled fresh from the URI, and the push callback."""
    if run_dir is None or not is_uri(str(run_dir)):
        return run_dir, []
    mirror = Mirror(str(run_dir))
    return mirror.pull(), [PushToURI(mirror)]
