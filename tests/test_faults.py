"""Faults: a non-finite upload, a diverging run, a client actor killed mid-round, a killed driver.
(Pool placement and unreachable clusters: test_placement.py. Kills of the whole run:
test_resume.py.)"""

from __future__ import annotations

import copy
import os
import signal
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from fedlora_ray.algorithm.server_opt import server_step
from fedlora_ray.compress import apply_payload
from fedlora_ray.config import ConfigError
from fedlora_ray.engine.callbacks import Callback
from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.serial import SerialBackend, run_serial
from fedlora_ray.run_errors import BadUpdateError, DivergenceError
from fedlora_ray.rundir.checkpoint import checkpoints
from tests.conftest import tiny_config, wait_for
from tests.resume_helpers import assert_same_run, logged_rounds, tables


class Corrupting:
    """A backend whose replies of one round are tampered with, as a faulty client would send;
    it keeps a copy of the honest replies."""

    def __init__(self, inner, round_: int, clients: list[int], value: float) -> None:
        self.inner, self.round_, self.clients, self.value = inner, round_, clients, value
        self.honest: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train(self, global_adapter, tasks):
        replies = self.inner.train(global_adapter, tasks)
        if tasks and tasks[0].round == self.round_:
            self.honest = copy.deepcopy(replies)
            for pos in self.clients:
                first = next(iter(replies[pos].payload.values()))
                first.value[0] = self.value
        return replies


class Record(Callback):
    """A user callback: keeps every round's rows and the global adapter after it."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.clients: list[dict] = []
        self.adapters: dict[int, object] = {}

    def on_round_end(self, run, state, row, client_rows):
        self.rows.append(dict(row))
        self.clients += client_rows
        self.adapters[state.round] = state.adapter.clone()


def test_a_nan_upload_is_rejected_before_aggregation(tmp_path):
    cfg = tiny_config("federation.rounds=3")
    backend = Corrupting(SerialBackend(cfg), round_=2, clients=[0], value=float("nan"))
    record = Record()
    run = FederatedRun(cfg, backend, tmp_path / "run", callbacks=[record])
    summary = run.run()
    rounds, clients = tables(tmp_path / "run")
    assert rounds["rejected"].tolist() == [0, 1, 0] and summary["rejected_uploads"] == 1
    bad = clients[(clients["round"] == 2) & clients["rejected"]]
    assert len(bad) == 1 and bad["weight"].iloc[0] == 0.0
    good = clients[(clients["round"] == 2) & ~clients["rejected"]]
    assert good["weight"].sum() == pytest.approx(1.0)  # renormalised over the accepted clients
    # round 2's global adapter is exactly the aggregate of the two honest uploads
    before, ctl = record.adapters[1], run.state.controller
    honest = backend.honest[1:]
    ids = np.array([r.client_id for r in honest])
    held = [apply_payload(before, r.payload, r.head) for r in honest]
    weights = run.ctx.sampling.weights(ids, run.ctx.data_share, ctl.q)
    update = run.ctx.scheme.aggregate(before, held, weights, ctl.components[ids])
    expected, _ = server_step(cfg.algorithm, run.state.server_opt, before, update)
    for m, (b, a) in record.adapters[2].lora.items():
        assert torch.equal(b, expected.lora[m][0]) and torch.equal(a, expected.lora[m][1])
    assert all(torch.isfinite(t).all() for pair in record.adapters[2].lora.values() for t in pair)
    assert record.rows[1]["rejected"] == 1 and len(record.clients) == 9  # the user callback saw every row


def test_a_nan_upload_stops_the_run_when_the_policy_says_fail(tmp_path):
    cfg = tiny_config("federation.rounds=3", "federation.on_bad_update=fail")
    run = FederatedRun(cfg, Corrupting(SerialBackend(cfg), 2, [1], float("inf")), tmp_path / "run")
    with pytest.raises(BadUpdateError, match="round 2: client"):
        run.run()
    assert pd.read_parquet(tmp_path / "run" / "rounds.parquet")["round"].tolist() == [1]


def test_unbounded_step_sizes_are_refused():
    for override, field in (
        ("algorithm.server_lr=1e30", "algorithm.server_lr"),
        ("federation.lr=5", "federation.lr"),
    ):
        with pytest.raises(ConfigError, match=field):
            tiny_config(override)


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_round(tmp_path):
    cfg = tiny_config("federation.rounds=4", "algorithm.server_lr=10", "checkpoint.every=1")
    run = FederatedRun(cfg, Corrupting(SerialBackend(cfg), 2, [0, 1, 2], 3e38), tmp_path / "run")
    with pytest.raises(DivergenceError, match="round 2: the run diverged"):
        run.run()
    assert pd.read_parquet(tmp_path / "run" / "rounds.parquet")["round"].tolist() == [1]
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["round-000001.safetensors"]
    flagged = FederatedRun(
        tiny_config("federation.rounds=4", "algorithm.server_lr=10", "federation.on_divergence=flag"),
        Corrupting(SerialBackend(cfg), 2, [0, 1, 2], 3e38),
        tmp_path / "flagged",
    )
    flagged.run()
    assert pd.read_parquet(tmp_path / "flagged" / "rounds.parquet")["diverged"].tolist() == [
        False,
        True,
        True,
        True,
    ]


SLOW = ["federation.rounds=3", "federation.local_epochs=30", "federation.eval_every=10", "checkpoint.every=1"]


@pytest.mark.ray
def test_a_client_actor_killed_mid_round_is_retried_with_the_same_numbers(ray_session, tmp_path):
    from actors.backend import RayBackend

    run_serial(tiny_config(*SLOW), tmp_path / "serial")

    class KillActor(Callback):
        def on_round_end(self, run, state, row, client_rows):
            if state.round == 1:
                pid = run.backend.describe()[0]["pid"]
                threading.Timer(0.4, os.kill, (pid, signal.SIGKILL)).start()  # inside round 2's training

    cfg = tiny_config(*SLOW, "runtime.backend=ray", "runtime.num_actors=2")
    run = FederatedRun(cfg, RayBackend, tmp_path / "ray", callbacks=[KillActor()])
    try:
        run.run()
    finally:
        run.backend.close()
    rounds, clients = tables(tmp_path / "ray")
    assert rounds["retries"].tolist()[1] >= 1 and (clients[clients["round"] == 2]["attempt"] > 1).any()
    want_rounds, want_clients = tables(tmp_path / "serial")
    columns = [c for c in want_rounds.columns if c != "retries"]
    pd.testing.assert_frame_equal(rounds[columns], want_rounds[columns], check_exact=True)
    columns = [c for c in want_clients.columns if c != "attempt"]
    pd.testing.assert_frame_equal(clients[columns], want_clients[columns], check_exact=True)


@pytest.mark.ray
def test_a_killed_driver_restarts_and_resumes_from_its_checkpoint(ray_session, tmp_path):
    from ray.util.state import list_actors

    from actors.launch import run_on_ray

    steady = [*SLOW, "federation.rounds=4", "federation.local_epochs=10"]
    run_serial(tiny_config(*steady), tmp_path / "serial")
    cfg = tiny_config(*steady, "runtime.backend=ray", "runtime.num_actors=1",
                      "runtime.driver_restarts=1")  # fmt: skip
    out = tmp_path / "ray"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=run_on_ray(cfg, out)))
    thread.start()
    assert wait_for(lambda: logged_rounds(out) >= 2, timeout=180, step=0.05)

    def driver_pid() -> int | None:
        alive = list_actors(
            address=ray_session["address"],  # this cluster, even with other Rays on the machine
            filters=[("class_name", "=", "DriverActor"), ("state", "=", "ALIVE")],
        )
        return alive[0].pid if alive else None

    pid = driver_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert result["summary"]["rounds"] == 4
    assert_same_run(out, tmp_path / "serial")
    assert driver_pid() is None or driver_pid() != pid


def test_replies_are_matched_to_clients_by_id(tmp_path):
    """A backend that answers in any order is fine; one that answers for the wrong clients stops
    the round before anything is aggregated."""

    class Shuffled:
        def __init__(self, inner, drop: bool) -> None:
            self.inner, self.drop = inner, drop

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def train(self, global_adapter, tasks):
            replies = list(reversed(self.inner.train(global_adapter, tasks)))
            return replies[1:] + replies[1:2] if self.drop else replies

    cfg = tiny_config("federation.rounds=2")
    run_serial(cfg, tmp_path / "plain")
    FederatedRun(cfg, Shuffled(SerialBackend(cfg), drop=False), tmp_path / "shuffled").run()
    assert_same_run(tmp_path / "shuffled", tmp_path / "plain")
    with pytest.raises(RuntimeError, match="answered for clients"):
        FederatedRun(cfg, Shuffled(SerialBackend(cfg), drop=True), None).run()
