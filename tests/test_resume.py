"""Checkpoint and resume: a run killed at a random point and resumed, a run extended from 4 to 6
rounds, and the same run in one go end bit-identical (logs and adapter), on both backends."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from fedlora_ray.config import ConfigError
from fedlora_ray.engine.serial import resume_serial, run_serial
from fedlora_ray.preflight import resume_config
from fedlora_ray.rundir import read_log
from fedlora_ray.rundir.checkpoint import checkpoints
from tests.conftest import tiny_config, wait_for
from tests.resume_helpers import assert_same_run, kill_after, start_child

SCHEMES = {
    "soft-ef-osfa": ["compression.method=soft", "compression.keep_ratio=0.2", "controller.kind=osfa"],
    "fslora-adaptive": [
        "model.lora_rank=8", "model.lora_alpha=16", "algorithm.kind=fslora", "sampling.kind=independent",
        "controller.kind=adaptive", "channel.compute_samples_per_s=40", "channel.compute_sigma=1.0",
    ],
}  # fmt: skip
COMMON = ["federation.rounds=6", "checkpoint.every=2", "federation.eval_every=2"]


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def reference(request, tmp_path_factory):
    """The run in one go, on the serial backend: what every other way must reproduce."""
    out = tmp_path_factory.mktemp(request.param) / "one-go"
    run_serial(tiny_config(*COMMON, *SCHEMES[request.param]), out)
    return request.param, out


def test_extended_from_4_to_6_rounds_equals_one_go(reference, tmp_path):
    name, want = reference
    run_serial(tiny_config(*COMMON, *SCHEMES[name], "federation.rounds=4"), tmp_path / "run")
    assert len(pd.read_parquet(tmp_path / "run" / "rounds.parquet")) == 4
    resume_serial(tmp_path / "run", ["federation.rounds=6"])
    assert_same_run(tmp_path / "run", want)
    assert [p.name for p in checkpoints(tmp_path / "run")] == [
        "round-000004.safetensors",
        "round-000006.safetensors",
    ]


def test_killed_at_a_random_point_and_resumed_equals_one_go(reference, tmp_path):
    name, want = reference
    out = tmp_path / "run"
    child = start_child([*COMMON, *SCHEMES[name]], out)
    rng = random.Random()
    assert kill_after(child, out, rounds=rng.randint(1, 4), jitter_s=rng.uniform(0, 0.3))
    assert not (out / "summary.json").exists()
    resume_serial(out)
    assert_same_run(out, want)


def test_killed_between_the_two_log_files_reads_and_resumes_consistently(reference, tmp_path):
    """The kill lands after clients.parquet got round 3 and before rounds.parquet did: readers see
    rounds 1-2 in both, and the resumed run has no gap and no duplicate row."""
    name, want = reference
    out = tmp_path / "run"
    child = start_child([*COMMON, *SCHEMES[name], "checkpoint.every=1"], out, kill_in_commit=3)
    assert child.wait(timeout=120) == -9
    raw_clients = pd.read_parquet(out / "clients.parquet")
    assert raw_clients["round"].max() == 3 and pd.read_parquet(out / "rounds.parquet")["round"].max() == 2
    rounds, clients = read_log(out)
    assert rounds["round"].to_pylist() == [1, 2] and set(clients["round"].to_pylist()) == {1, 2}
    assert [p.name for p in checkpoints(out)][-1] == "round-000002.safetensors"  # the log commits before it
    resume_serial(out)
    assert_same_run(out, want)


def test_a_resumed_run_refuses_a_changed_config(tmp_path):
    run_serial(tiny_config("federation.rounds=2"), tmp_path / "run")
    with pytest.raises(ConfigError, match="only federation.rounds may change"):
        resume_config(tmp_path / "run", ["federation.lr=0.1"])
    with pytest.raises(ConfigError, match="can only be extended"):
        resume_config(tmp_path / "run", ["federation.rounds=1"])
    with pytest.raises(ConfigError, match="not a run directory"):
        resume_config(tmp_path / "nothing")
    assert resume_config(tmp_path / "run", ["federation.rounds=5"]).federation.rounds == 5


@pytest.mark.ray
def test_on_ray_killed_resumed_and_extended_equals_one_go(reference, ray_session, tmp_path):
    """The job runs in a child process on the shared cluster and is killed with SIGKILL at a
    random point (its DriverActor dies with it); the run is resumed on Ray, then extended from
    4 to 6 rounds. The logs and adapter equal the serial run in one go."""
    from ray.util.state import list_actors

    from actors.launch import run_on_ray

    name, want = reference
    out = tmp_path / "run"
    ray_cfg = [*COMMON, *SCHEMES[name], "runtime.backend=ray", "runtime.num_actors=1"]
    child = start_child(
        [*ray_cfg, "federation.rounds=4", f"runtime.ray_address={ray_session['address']}"], out
    )
    rng = random.Random()
    killed = kill_after(child, out, rounds=rng.randint(1, 3), jitter_s=rng.uniform(0, 0.3), timeout=300)

    def no_driver() -> bool:
        return not list_actors(
            address=ray_session["address"],  # this cluster, even with other Rays on the machine
            filters=[("class_name", "=", "DriverActor"), ("state", "=", "ALIVE")],
        )

    assert killed and wait_for(no_driver, timeout=60)  # the orphaned driver is gone before we resume
    run_on_ray(resume_config(out), out, resume=True)
    assert len(pd.read_parquet(out / "rounds.parquet")) == 4
    run_on_ray(resume_config(out, ["federation.rounds=6"]), out, resume=True)
    assert_same_run(out, want)
