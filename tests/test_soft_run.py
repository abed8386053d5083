"""SOFT inside a run: budgets and bits in the logs, error memory in the driver's store, and the
orthogonal regulariser doing its job."""

import pandas as pd
import pytest
import torch

from fedlora_ray.compress import module_budget
from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.serial import SerialBackend
from fedlora_ray.lora.orthogonality import orthogonal_penalty, orthogonality_error
from tests.conftest import tiny_config


def test_penalty_and_error_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 4, generator=g))
    b, a = q * torch.tensor([1.0, 2.0, 3.0, 4.0]), q.t() * 0.5  # exactly orthogonal factors
    assert float(orthogonal_penalty([(b, a)])) == pytest.approx(0, abs=1e-9)
    assert orthogonality_error([(b, a)]) == pytest.approx((0, 0), abs=1e-6)
    b2, a2 = torch.randn(16, 4, generator=g), torch.randn(4, 16, generator=g)
    gram_a, gram_b = a2 @ a2.t(), b2.t() @ b2
    off = lambda m: m - torch.diag(torch.diag(m))  # noqa: E731
    expect = float(off(gram_a).square().sum() + off(gram_b).square().sum())
    assert float(orthogonal_penalty([(b2, a2)])) == pytest.approx(expect, rel=1e-5)
    err_a, _ = orthogonality_error([(b2, a2)])
    assert err_a == pytest.approx(float(off(gram_a).norm() / torch.diag(gram_a).norm()), rel=1e-5)
    assert orthogonality_error([(torch.zeros(16, 4), a2)])[1] is None  # B at its zero init


def test_the_scaled_penalty_is_scale_free_and_pushes_b_as_hard_as_a():
    """``compression.orth_penalty: scaled`` penalises the cosines between rank components: scaling
    a factor leaves it unchanged, and B's gradient is as large as A's at B's real scale (about
    100 times smaller entries), where the plain eq. (7) barely moves B."""
    g = torch.Generator().manual_seed(1)
    b, a = torch.randn(32, 4, generator=g), torch.randn(4, 24, generator=g)
    cos = lambda m: m / torch.outer(m.diag().sqrt(), m.diag().sqrt())  # noqa: E731
    off = lambda m: m - torch.diag(torch.diag(m))  # noqa: E731
    expect = float(off(cos(a @ a.t())).square().sum() + off(cos(b.t() @ b)).square().sum())
    assert float(orthogonal_penalty([(b, a)], scaled=True)) == pytest.approx(expect, rel=1e-5)
    assert float(orthogonal_penalty([(b * 0.01, a * 7)], scaled=True)) == pytest.approx(expect, rel=1e-4)
    assert float(orthogonal_penalty([(torch.zeros(32, 4), a)], scaled=True)) == pytest.approx(
        float(off(cos(a @ a.t())).square().sum()), rel=1e-5
    )  # B at its zero init adds nothing and stays finite
    grad_ratio = {}
    for scaled in (False, True):
        small_b = (b * 0.01).requires_grad_()
        big_a = a.clone().requires_grad_()
        orthogonal_penalty([(small_b, big_a)], scaled=scaled).backward()
        # relative step each factor would take: gradient norm against the factor's own norm
        rel_b = float(small_b.grad.norm() / small_b.detach().norm())
        rel_a = float(big_a.grad.norm() / big_a.detach().norm())
        grad_ratio[scaled] = rel_b / rel_a
    assert grad_ratio[False] < 1e-3 < 0.1 < grad_ratio[True]


def test_soft_run_logs_its_budget_and_keeps_error_memory_across_rounds(tmp_path):
    cfg = tiny_config("federation.rounds=4", "compression.method=soft", "compression.keep_ratio=0.1")
    run = FederatedRun(cfg, SerialBackend(cfg), tmp_path / "run")
    run.run_round()
    first = set(run.client_state)
    assert first and all("error" in s for s in run.client_state.values())
    kept_back = {
        c: [t.clone() for pair in s["error"].values() for t in pair] for c, s in run.client_state.items()
    }
    run.run()
    clients = pd.read_parquet(tmp_path / "run" / "clients.parquet")
    rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
    budget = sum(
        module_budget(0.1, b.shape[0], a.shape[1], b.shape[1]) for b, a in run.global_adapter.lora.values()
    )
    assert (clients["kept_entries"] == budget).all()
    assert ((clients["distortion"] > 0) & (clients["distortion"] < 1)).all()
    assert rounds["kept_entries"].tolist() == clients.groupby("round")["kept_entries"].sum().tolist()
    assert rounds["orth_error_a"].notna().all() and rounds["orth_error_b"].notna().all()
    # a client from round 1 that sat out every later round still holds its round-1 residual
    later = set(clients.loc[clients["round"] > 1, "client_id"])
    for c in first - later:
        now = [t for pair in run.client_state[c]["error"].values() for t in pair]
        assert all(torch.equal(x, y) for x, y in zip(now, kept_back[c]))
    # and one that came back has a new one
    for c in first & later:
        now = [t for pair in run.client_state[c]["error"].values() for t in pair]
        assert not all(torch.equal(x, y) for x, y in zip(now, kept_back[c]))
    assert set(run.client_state) == set(clients["client_id"])


def test_without_error_feedback_nothing_is_stored():
    cfg = tiny_config("compression.method=flasc", "compression.error_feedback=false")
    run = FederatedRun(cfg, SerialBackend(cfg), None)
    run.run_round()
    assert run.client_state == {}


def test_the_regulariser_makes_the_factors_more_orthogonal():
    def orth_after(lambda_o):
        cfg = tiny_config(
            "federation.rounds=3", "federation.local_epochs=3", "compression.method=soft",
            "compression.keep_ratio=1.0", f"compression.lambda_o={lambda_o}", "data.partition=iid",
        )  # fmt: skip
        run = FederatedRun(cfg, SerialBackend(cfg), None)
        run.run()
        return run.history[-1]["orth_error_a"], run.history[-1]["orth_error_b"]

    free_a, free_b = orth_after(0.0)
    reg_a, reg_b = orth_after(5.0)
    assert reg_a < 0.5 * free_a
    assert reg_b < free_b
