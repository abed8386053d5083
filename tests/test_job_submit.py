"""`ray job submit` of the smoke job against a `ray start --head` cluster on 127.0.0.1."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _submit(ray_cluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=ray_cluster["env_path"])
    for _ in range(30):  # the head's job agent comes up a little after its dashboard
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "ray"), "job", "submit",
                "--address", ray_cluster["dashboard"], "--working-dir", str(ROOT), "--",
                "python", "jobs/run.py", *args,
            ],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        if "No available agent" not in proc.stderr + proc.stdout:
            break
        time.sleep(2)
    return proc


def test_smoke_job_through_ray_job_submit_then_extended_with_resume(ray_cluster, tmp_path):
    out = tmp_path / "smoke"
    start = time.monotonic()
    proc = _submit(ray_cluster, "jobs/configs/smoke.yaml", "--out", str(out))
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "round    2/2" in proc.stdout  # the progress display reaches the job log
    assert "succeeded" in proc.stdout
    rounds = pd.read_parquet(out / "rounds.parquet")
    clients = pd.read_parquet(out / "clients.parquet")
    assert rounds["round"].tolist() == [1, 2]
    assert rounds["test_accuracy"].notna().all()
    assert set(clients["actor_id"]) == {"actor-0", "actor-1"}
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    print(f"smoke job through ray job submit: {seconds:.1f} s")
    # the same run, extended by one round from its checkpoint through `jobs/run.py --resume`
    proc = _submit(ray_cluster, "--resume", str(out), "--set", "federation.rounds=3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming" in proc.stdout and "round    3/3" in proc.stdout
    assert pd.read_parquet(out / "rounds.parquet")["round"].tolist() == [1, 2, 3]


def test_a_sweep_through_ray_job_submit(ray_cluster, tmp_path):
    """Both runs of the smoke sweep, packed as serial tasks, from the job's entrypoint. (A relative
    --out there is refused: tests/test_sweep.py sets the variable Ray gives the entrypoint.)"""
    root = tmp_path / "sweep"
    proc = _submit(
        ray_cluster, "sweep", "jobs/sweeps/smoke.yaml", "--out", str(root), "--set", "runtime.backend=serial"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep smoke: 2/2 done (0 before), 0 running, 0 failed" in proc.stdout
    joined = pd.read_parquet(root / "runs.parquet").merge(
        pd.concat(pd.read_parquet(root / r / "rounds.parquet") for r in ("smoke-none-s0", "smoke-soft-s0")),
        on="run_id",
    )
    assert sorted(joined["compression.method"].unique()) == ["none", "soft"] and len(joined) == 4
