"""Shared by the resume and fault tests: run a job in a child process and kill it, compare runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from tests.conftest import ROOT, TINY

# columns that differ between runs that computed the same numbers: wall clocks, workers, the run's name
TIMING = {
    "round_seconds", "client_seconds", "elapsed_seconds", "train_seconds", "solve_seconds", "actor_id",
    "run_id",
}  # fmt: skip

CHILD = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
from tests.conftest import tiny_config
overrides, out, kill_in_commit = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if kill_in_commit:
    # die between the two renames of a log flush: a clients part replaced, its rounds part not
    from fedlora_ray.rundir.run_log import RunLog
    plain = RunLog._write_part
    def write_part(self, name, start, table):
        plain(self, name, start, table)
        if name == "clients" and len(self._history) == kill_in_commit:
            os.kill(os.getpid(), signal.SIGKILL)
    RunLog._write_part = write_part
cfg = tiny_config(*overrides)
if cfg.runtime.backend == "ray":
    from actors.launch import run_on_ray
    run_on_ray(cfg, out)
else:
    from fedlora_ray.engine.serial import run_serial
    run_serial(cfg, out)
"""


def start_child(overrides: list[str], out: Path, kill_in_commit: int = 0) -> subprocess.Popen:
    code = CHILD.format(root=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(overrides), str(out), str(kill_in_commit)],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def logged_rounds(out: Path) -> int:
    try:
        return len(pd.read_parquet(out / "rounds.parquet"))
    except Exception:  # not there yet
        return 0


def kill_after(
    child: subprocess.Popen, out: Path, rounds: int, jitter_s: float, timeout: float = 120
) -> bool:
    """SIGKILL the child once ``rounds`` rounds are logged, plus ``jitter_s``; False if it ended first."""
    end = time.monotonic() + timeout
    while child.poll() is None and logged_rounds(out) < rounds and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(jitter_s)
    if child.poll() is not None:
        return False
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    return True


def tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = []
    for name in ("rounds", "clients"):
        df = pd.read_parquet(out / f"{name}.parquet")
        frames.append(df[[c for c in df.columns if c not in TIMING]])
    return frames[0], frames[1]


def assert_same_run(got: Path, want: Path) -> None:
    """Bit-identical logs (timing columns aside) and adapter."""
    for a, b in zip(tables(got), tables(want)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    x = load_file(str(got / "adapter" / "adapter_model.safetensors"))
    y = load_file(str(want / "adapter" / "adapter_model.safetensors"))
    assert x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


__all__ = ["TINY", "assert_same_run", "kill_after", "logged_rounds", "start_child", "tables"]
