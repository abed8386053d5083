"""The whole run in one process: logs, adapter, learning, crash safety, determinism."""

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.serial import SerialBackend, run_serial
from fedlora_ray.lora.model import build_encoder
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cfg = tiny_config(
        "federation.rounds=6", "federation.eval_every=4", "federation.local_epochs=2", "data.partition=iid"
    )
    out = tmp_path_factory.mktemp("serial") / "run"
    backend = SerialBackend(cfg)
    run = FederatedRun(cfg, backend, out)
    summary = run.run()
    return cfg, out, run, summary


def test_logs_hold_one_row_per_round_and_per_client(finished):
    cfg, out, run, summary = finished
    rounds = pd.read_parquet(out / "rounds.parquet")
    clients = pd.read_parquet(out / "clients.parquet")
    k = cfg.federation.clients_per_round
    assert rounds["round"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (rounds["sampled"] == k).all()
    assert len(clients) == 6 * k
    assert clients.groupby("round")["weight"].sum().round(12).eq(1.0).all()
    # evaluated on rounds 4 and 6 (eval_every and the last round) only
    assert rounds["test_accuracy"].notna().tolist() == [False, False, False, True, False, True]
    assert summary["final_test_accuracy"] == rounds["test_accuracy"].iloc[-1]
    # bits = what was sent: every LoRA entry and the head, 32 bits each, per client
    entries = run.global_adapter.num_entries()
    assert (clients["bits_sent"] == cfg.compression.value_bits * entries).all()
    lora_entries = sum(b.numel() + a.numel() for b, a in run.global_adapter.lora.values())
    assert (clients["kept_entries"] == lora_entries).all()  # method none sends everything
    assert rounds["uplink_bits"].tolist() == clients.groupby("round")["bits_sent"].sum().tolist()
    assert (rounds["covariance"] > 0).all()
    assert (out / "config.json").exists() and (out / "summary.json").exists()


def test_training_lowers_the_loss(finished):
    _, out, _, _ = finished
    loss = pd.read_parquet(out / "rounds.parquet")["train_loss"].to_numpy()
    assert loss[-1] < loss[0] - 0.1


def test_final_adapter_loads_with_peft_and_equals_the_global_one(finished):
    cfg, out, run, _ = finished
    loaded = PeftModel.from_pretrained(
        build_encoder(cfg.model, cfg.federation.seed, pretrained=False), str(out / "adapter")
    )
    params = dict(loaded.named_parameters())
    for module, (b, a) in run.global_adapter.lora.items():
        assert torch.equal(params[f"base_model.model.{module}.lora_B.default.weight"], b)
        assert torch.equal(params[f"base_model.model.{module}.lora_A.default.weight"], a)


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    cfg = tiny_config()
    a = run_serial(cfg, tmp_path / "a")
    b = run_serial(cfg, tmp_path / "b")
    c = run_serial(tiny_config("federation.seed=1"), tmp_path / "c")
    ra, rb, rc = (pd.read_parquet(tmp_path / x / "rounds.parquet") for x in "abc")
    assert ra["train_loss"].tolist() == rb["train_loss"].tolist()
    assert a["final_test_loss"] == b["final_test_loss"]
    assert ra["train_loss"].tolist() != rc["train_loss"].tolist() and c["rounds"] == 2


class _FailsInRound:
    """A backend whose clients crash in one round, as a killed worker would."""

    def __init__(self, inner, round_):
        self.inner, self.round_ = inner, round_

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train(self, global_adapter, tasks):
        if tasks[0].round == self.round_:
            raise RuntimeError("client crashed")
        return self.inner.train(global_adapter, tasks)


def test_a_crash_leaves_complete_logs_of_the_finished_rounds(tmp_path):
    cfg = tiny_config("federation.rounds=4")
    run = FederatedRun(cfg, _FailsInRound(SerialBackend(cfg), 3), tmp_path / "run")
    with pytest.raises(RuntimeError, match="client crashed"):
        run.run()
    rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
    assert rounds["round"].tolist() == [1, 2]
    assert sorted(set(pd.read_parquet(tmp_path / "run" / "clients.parquet")["round"])) == [1, 2]
    assert not (tmp_path / "run" / "adapter").exists()  # no adapter of an unfinished run
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_clients_of_a_round_train_independently_of_their_batch():
    """A client's reply does not depend on which other clients share its call (what lets the
    Ray backend split a round any way it likes)."""
    cfg = tiny_config()
    run = FederatedRun(cfg, SerialBackend(cfg), None)
    from fedlora_ray.algorithm.messages import ClientTask

    tasks = [ClientTask(i, 1, 100 + i, run.partition[i]) for i in range(3)]
    together = run.backend.train(run.global_adapter, tasks)
    alone = run.backend.train(run.global_adapter, tasks[2:])
    m = next(iter(alone[0].payload))
    assert torch.equal(together[2].payload[m].value, alone[0].payload[m].value)
    assert together[2].local_loss == alone[0].local_loss
    assert not np.isclose(together[0].local_loss, together[1].local_loss)
