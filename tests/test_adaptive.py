"""Independent sampling, the equal-finish bandwidth split and the adaptive controller."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from fedlora_ray.algorithm.aggregate import aggregate_update
from fedlora_ray.algorithm.sampling import IndependentSampling, UniformSampling, sample_independent
from fedlora_ray.channel import Uplink, equal_finish_shares
from fedlora_ray.config import ChannelConfig, ConfigError
from fedlora_ray.control.adaptive import AdaptiveProblem, expected_max, solve
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.simulate import run_serial

OPTIONS = (0.125, 0.25, 0.5, 1.0)


def test_independent_aggregate_is_unbiased_monte_carlo():
    """E[sum_{i in S} p_i / q_i Delta_i] = sum_i p_i Delta_i: the mean over 20,000 rounds agrees
    with full participation within 5 standard errors, entry by entry."""
    n, rounds = 12, 20_000
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(n))
    q = rng.uniform(0.1, 0.9, n)
    x = Adapter({"m": (torch.zeros(3, 2), torch.zeros(2, 4))}, {})
    deltas = torch.randn(n, 3 * 2 + 2 * 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    full = (torch.as_tensor(p)[:, None] * deltas).sum(0)
    samples = torch.empty(rounds, deltas.shape[1], dtype=torch.float64)
    joined = np.zeros(n)
    for t in range(rounds):
        part = sample_independent(7, t, q)
        joined[part] += 1
        w = IndependentSampling(7, n, 1).weights(part, p, q).values
        samples[t] = (torch.as_tensor(w)[:, None] * deltas[part]).sum(0)
    mean, se = samples.mean(0), samples.std(0) / rounds**0.5
    assert ((mean - full).abs() <= 5 * se).all()
    assert np.allclose(joined / rounds, q, atol=0.015)
    # the same weights through the adapter-level aggregation
    ups = []
    for i in range(3):
        u = x.clone()
        u.lora["m"] = (deltas[i, :6].float().reshape(3, 2), deltas[i, 6:].float().reshape(2, 4))
        ups.append(u)
    w = IndependentSampling(7, n, 1).weights(np.arange(3), p, q).values
    agg = aggregate_update(x, ups, w.tolist())
    torch.testing.assert_close(
        agg.lora["m"][0].double(), sum(w[i] * deltas[i, :6].reshape(3, 2) for i in range(3))
    )


def test_uniform_weights_renormalise_over_the_participants():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    w = UniformSampling(0, 4, 2).weights(np.array([1, 3]), p, np.full(4, 0.5))
    assert np.allclose(w.values, [0.2 / 0.6, 0.4 / 0.6]) and w.total == 1.0 and w.inclusion is None


def test_expected_max_matches_monte_carlo():
    rng = np.random.default_rng(2)
    t, q = rng.lognormal(0, 1, 15), rng.uniform(0.05, 0.8, 15)
    draws = rng.random((200_000, 15)) < q
    mc = np.where(draws, t, 0.0).max(1)
    assert abs(expected_max(t, q) - mc.mean()) < 4 * mc.std() / len(mc) ** 0.5
    assert expected_max(t, np.zeros(15)) == 0 and np.isclose(expected_max(t, np.ones(15)), t.max())


def test_equal_finish_split_ends_every_participant_together():
    rng = np.random.default_rng(3)
    bits, se, comp = rng.uniform(1e5, 4e6, 8), rng.uniform(1, 12, 8), rng.uniform(0, 2, 8)
    shares, t_end = equal_finish_shares(bits, se, comp, 20e6)
    finish = comp + bits / (shares * 20e6 * se)
    assert np.isclose(shares.sum(), 1) and np.allclose(finish, t_end, rtol=1e-6)
    equal = comp + bits / (20e6 / 8 * se)
    assert t_end < equal.max()  # the split beats equal shares on the round's time


def _problem(rng, n, k, a1=20.0):
    return AdaptiveProblem(
        share=rng.dirichlet(np.ones(n)), grad_sq=rng.uniform(0.5, 2, n), tau=rng.lognormal(0, 1, n),
        upload=rng.lognormal(-1, 1, n), omega=0.7, options=OPTIONS, k=k, q_min=0.02, q_max=1.0,
        a0=1.0, a1=a1, a2=0.5,
    )  # fmt: skip


def _brute_force(prob: AdaptiveProblem, step: float) -> float:
    """Every s in OPTIONS^N and every q on a grid of the simplex sum q = K."""
    grid = np.arange(prob.q_min, prob.q_max + 1e-9, step)
    head = np.array(list(itertools.product(grid, repeat=prob.n - 1)))
    last = prob.k - head.sum(1)
    ok = (last >= prob.q_min - 1e-12) & (last <= prob.q_max + 1e-12)
    q = np.concatenate([head[ok], last[ok, None]], 1)
    best = np.inf
    for s in itertools.product(prob.options, repeat=prob.n):
        s_arr = np.array(s)
        best = min(best, float((prob.rounds(q, s_arr) * expected_max(prob.times(s_arr), q)).min()))
    return best


@pytest.mark.parametrize("case", range(10))
def test_adaptive_solver_is_within_one_percent_of_brute_force(case):
    rng = np.random.default_rng(100 + case)
    n, k = (3, 1.0) if case < 6 else (4, 1.0 if case < 9 else 2.0)
    prob = _problem(rng, n, k, a1=(2.0, 20.0)[case % 2])
    plan = solve(prob)
    assert np.isclose(plan.q.sum(), k) and (plan.q >= prob.q_min).all() and (plan.q <= prob.q_max).all()
    assert set(plan.s) <= set(OPTIONS)
    assert np.isclose(plan.objective, prob.objective(plan.q, plan.s))
    assert plan.objective <= 1.01 * _brute_force(prob, 0.01 if n == 3 else (0.02 if k == 1 else 0.025))


def test_adaptive_plan_samples_slow_clients_less_and_beats_uniform():
    """docs/algorithms.md §7's prototype: N = 100, K = 10, lognormal compute, the §4 channel."""
    rng = np.random.default_rng(1)
    n, k = 100, 10
    up = Uplink(ChannelConfig(), n, 0)
    tau = rng.lognormal(0, 1, n)
    prob = AdaptiveProblem(
        share=np.full(n, 1 / n), grad_sq=np.ones(n), tau=tau,
        upload=3.5e6 / (20e6 * np.log2(1 + up.mean_snr) / k), omega=0.7, options=OPTIONS, k=k,
        q_min=0.01, q_max=1.0, a0=1.0, a1=20.0, a2=0.5,
    )  # fmt: skip
    plan = solve(prob)
    uniform = prob.objective(np.full(n, k / n), np.ones(n))
    assert uniform / plan.objective > 1.3
    assert np.corrcoef(plan.q, tau)[0, 1] < -0.3
    assert np.isclose(plan.q.sum(), k) and (plan.s < 1).any()


def test_adaptive_run_logs_q_s_and_a_clock_of_equal_finish_rounds(tmp_path):
    cfg = tiny_config(
        "model.lora_rank=8", "algorithm.kind=fslora", "sampling.kind=independent", "controller.kind=adaptive",
        "channel.compute_samples_per_s=40", "channel.compute_sigma=1.0", "channel.tx_power_sigma_db=4",
        "federation.rounds=3",
    )  # fmt: skip
    summary = run_serial(cfg, tmp_path)
    profile = pd.read_parquet(tmp_path / "profile.parquet")
    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    clients = pd.read_parquet(tmp_path / "clients.parquet")
    assert len(profile) == 6 and np.isclose(profile["sample_prob"].sum(), 3)
    assert set(profile["sketch_ratio"]) <= set(OPTIONS)
    assert np.allclose(profile["components"], profile["sketch_ratio"] * 8)
    merged = clients.merge(profile, on="client_id", suffixes=("", "_profile"))
    assert np.allclose(merged["sample_prob"], merged["sample_prob_profile"])
    assert (merged["components"] == merged["components_profile"]).all()
    # compute time scales with omega + (1 - omega) s
    expected_compute = merged["compute_full_s"] * (0.7 + 0.3 * merged["sketch_ratio"])
    assert np.allclose(merged["compute_s"], expected_compute)
    np.testing.assert_allclose(rounds["sim_time_s"], rounds["round_delay_s"].cumsum())
    for t, group in clients.groupby("round"):
        finish = group["compute_s"] + group["upload_s"]
        assert np.allclose(finish, finish.iloc[0], rtol=1e-6)  # participants finish together
        assert np.isclose(rounds.set_index("round").loc[t, "round_delay_s"], finish.max())
    assert np.allclose(rounds["objective"], summary["objective"])


def test_power_spread_is_seeded_and_leaves_the_rest_of_the_draws_alone():
    plain = Uplink(ChannelConfig(compute_samples_per_s=10, compute_sigma=1), 4000, 5)
    spread = Uplink(ChannelConfig(compute_samples_per_s=10, compute_sigma=1, tx_power_sigma_db=6), 4000, 5)
    assert np.array_equal(plain.distance_m, spread.distance_m)
    assert np.array_equal(plain.samples_per_s, spread.samples_per_s)
    assert np.all(plain.tx_power_w == 0.1)
    db = 10 * np.log10(spread.tx_power_w / 0.1)
    assert abs(db.std() - 6) < 0.3 and abs(db.mean()) < 0.3
    assert np.allclose(spread.mean_snr / plain.mean_snr, spread.tx_power_w / 0.1)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["controller.kind=adaptive", "sampling.kind=independent"], "controller.kind"),
        (["controller.kind=adaptive", "algorithm.kind=fslora"], "controller.kind"),
        (["algorithm.kind=fslora", "compression.method=soft"], "compression.method"),
        (["algorithm.kind=hetlora", "algorithm.client_ratios=[0.5, 1.5]"], "algorithm.client_ratios[1]"),
        (["algorithm.kind=fslora", "algorithm.client_ratios=[0.05]"], "algorithm.client_ratios[0]"),
        (["sampling.kind=independent", "sampling.q_max=0.2"], "federation.clients_per_round"),
    ],
)
def test_bad_scheme_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=re.escape(f"'{field}'")):
        tiny_config("model.lora_rank=8", *overrides)


def test_a_round_nobody_joins_is_logged_and_leaves_the_model_alone(tmp_path):
    """Independent sampling can draw an empty set: the round costs no time and changes nothing."""
    cfg = tiny_config(
        "sampling.kind=independent", "federation.clients_per_round=1", "federation.rounds=4",
        "channel.compute_samples_per_s=40", "log.save_adapter=false",
    )  # fmt: skip
    joined = [len(sample_independent(cfg.federation.seed, t, np.full(6, 1 / 6))) for t in range(1, 5)]
    assert joined[0] == 0 and joined[1] > 0  # the seed gives an empty first round
    run_serial(cfg, tmp_path)
    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    assert rounds["sampled"].tolist() == joined
    empty = rounds[rounds["sampled"] == 0]
    assert (empty["round_delay_s"] == 0).all() and empty["train_loss"].isna().all()
    assert (rounds.loc[rounds["sampled"] > 0, "round_delay_s"] > 0).all()
    np.testing.assert_allclose(rounds["sim_time_s"], rounds["round_delay_s"].cumsum())
