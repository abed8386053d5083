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


def test_smoke_job_through_ray_job_submit(ray_cluster, tmp_path):
    out = tmp_path / "smoke"
    env = dict(os.environ, PATH=ray_cluster["env_path"])
    start = time.monotonic()
    for _ in range(30):  # the head's job agent comes up a little after its dashboard
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "ray"), "job", "submit",
                "--address", ray_cluster["dashboard"], "--working-dir", str(ROOT), "--",
                "python", "jobs/run.py", "jobs/configs/smoke.yaml", "--out", str(out),
            ],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        if "No available agent" not in proc.stderr + proc.stdout:
            break
        time.sleep(2)
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
