"""TSFA: the offline rank, the online stage's two solvers, and the long-horizon properties."""

import numpy as np
import pytest

from fedlora_ray.channel import Uplink
from fedlora_ray.components import load_run_config
from fedlora_ray.compress.bits import entry_bits, lora_entries
from fedlora_ray.control.bound import bound, rank_term, sparsification_term
from fedlora_ray.control.controller_only import simulate_uplink
from fedlora_ray.control.online import objective, solve_cvxpy, solve_scalar
from fedlora_ray.control.tsfa import offline_rank, rho_for_budget

MINILM_DIMS = [(384, 384)] * 12  # q and v in 6 layers: no model needed for the controller
EQUAL_SIZES = np.full(100, 40.0)  # the default 100 clients, 40 examples each: no data needed either


def _simulate(cfg, rounds):
    """Controller-only rounds on MiniLM's shapes with the LoRA upload alone (no head)."""
    return simulate_uplink(cfg, rounds, MINILM_DIMS, sizes=EQUAL_SIZES, head_entries=0)


def _cfg(*overrides):
    return load_run_config(None, ["controller.kind=tsfa", "compression.method=soft", *overrides])


def test_scalar_and_cvxpy_solvers_agree_on_many_draws():
    rng = np.random.default_rng(0)
    for _ in range(60):
        s, qa = 10 ** rng.uniform(-4, 1), 10 ** rng.uniform(-4, 2) * rng.integers(0, 2)
        rho_min = 10 ** rng.uniform(-3, -0.5)
        a, b = solve_scalar(s, qa, rho_min), solve_cvxpy(s, qa, rho_min)
        assert a == pytest.approx(b, abs=2e-4)
        assert objective(s, qa, a) == pytest.approx(objective(s, qa, b), rel=1e-5, abs=1e-8)
        assert rho_min <= a <= 1


def test_scalar_solution_is_the_minimum_on_a_grid():
    grid = np.linspace(0.01, 1, 20000)
    for s, qa in ((1e-2, 0.3), (0.5, 40.0), (1e-3, 1e-3)):
        best = grid[np.argmin(objective(s, qa, grid))]
        assert solve_scalar(s, qa, 0.01) == pytest.approx(best, abs=1e-3)


def test_bound_terms():
    ctl = _cfg().controller
    assert rank_term(ctl, ctl.max_rank) == 0
    assert rank_term(ctl, 1) == pytest.approx(sum(j**-2 for j in range(2, 65)))
    assert sparsification_term(ctl, 8, 1.0) == 0
    assert bound(ctl, 8, 0.5) == pytest.approx(rank_term(ctl, 8) + 1e-3 * 8 * 0.5 / 0.25 + 1e-3 * 8)


def test_lemma2_rho_meets_the_budget_exactly_when_interior():
    cfg = _cfg("controller.delay_budget_s=0.2")
    inv = 10 * 0.2
    rho = rho_for_budget(cfg, 8, MINILM_DIMS, inv)
    delay = rho * lora_entries(8, MINILM_DIMS) * entry_bits(32, 8, MINILM_DIMS) / 20e6 * inv
    assert 0.01 < rho < 1 and delay == pytest.approx(0.2)


def test_offline_rank_never_falls_as_the_budget_grows_and_stays_interior():
    up = Uplink(_cfg().channel, 100, seed=0)
    ranks = [
        offline_rank(_cfg(f"controller.delay_budget_s={d}"), MINILM_DIMS, up)[0]
        for d in (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
    ]  # noqa: E501
    assert ranks == sorted(ranks)
    assert ranks[0] > 1 and ranks[-1] < 64 and len(set(ranks)) > 4


def test_long_horizon_average_delay_meets_the_budget():
    for budget in (0.1, 0.2, 0.5):
        df = _simulate(_cfg(f"controller.delay_budget_s={budget}"), 10_000)
        assert df["upload_delay_s"].mean() == pytest.approx(budget, rel=0.02)
        assert df["sim_time_s"].iloc[-1] == pytest.approx(df["upload_delay_s"].sum())


def test_larger_v_gives_a_lower_bound_and_a_longer_delay():
    runs = [_simulate(_cfg(f"controller.V={v}"), 3000) for v in (0.1, 1, 10, 100)]
    bounds = [df["bound"].mean() for df in runs]
    delays = [df["upload_delay_s"].mean() for df in runs]
    assert bounds == sorted(bounds, reverse=True)
    assert delays == sorted(delays)
    assert delays[-1] > 1.03 * delays[0]


def test_fixed_and_equal_keep_the_given_ratio_and_eq41_beats_equal():
    fixed = _simulate(_cfg("controller.kind=fixed", "compression.keep_ratio=0.2"), 500)
    equal = _simulate(_cfg("controller.kind=equal", "compression.keep_ratio=0.2"), 500)
    assert (fixed["keep_ratio"] == 0.2).all() and (equal["keep_ratio"] == 0.2).all()
    assert fixed["upload_delay_s"].mean() < equal["upload_delay_s"].mean()


def test_tsfa_builds_the_model_at_the_offline_rank(tmp_path):
    import json

    import pandas as pd

    from fedlora_ray.engine.serial import run_serial
    from tests.conftest import tiny_config

    cfg = tiny_config(
        "controller.kind=tsfa",
        "compression.method=soft",
        "controller.delay_budget_s=0.0005",
        "controller.V=0.0001",
        "federation.rounds=4",
    )
    run_serial(cfg, tmp_path / "run")
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
    clients = pd.read_parquet(tmp_path / "run" / "clients.parquet")
    assert resolved["model"]["lora_rank"] == rounds["lora_rank"].iloc[0] != cfg.model.lora_rank
    assert rounds["sim_time_s"].tolist() == pytest.approx(rounds["round_delay_s"].cumsum().tolist())
    assert rounds["keep_ratio"].iloc[0] == 1.0 and rounds["queue"].iloc[0] == 0  # no backlog yet
    assert (rounds["queue"].iloc[1:] > 0).all() and (rounds["keep_ratio"].iloc[1:] < 1).all()
    assert clients.groupby("round")["bandwidth_share"].sum().tolist() == pytest.approx([1.0] * 4)
    assert (clients["upload_s"] > 0).all() and clients["snr_db"].between(-20, 60).all()
    # every client of a round finishes its upload together under eq. (41), up to the payload sizes
    assert rounds["upload_delay_s"].tolist() == pytest.approx(
        clients.groupby("round")["upload_s"].max().tolist()
    )


def test_pilot_calibration_fits_and_records_the_profile(tmp_path):
    import json

    from fedlora_ray.control.tsfa import TSFA
    from tests.conftest import tiny_config

    cfg = tiny_config(
        "controller.kind=tsfa", "compression.method=soft", "controller.calibrate=true",
        "controller.max_rank=8", "controller.calibrate_steps=5",
    )  # fmt: skip
    resolved = TSFA.prepare(cfg, tmp_path)
    record = json.loads((tmp_path / "calibration.json").read_text())
    profile = np.array(record["sigma_profile"])
    assert len(profile) == 8 and profile[0] == pytest.approx(1.0) and np.all(np.diff(profile) <= 1e-12)
    assert resolved.controller.sigma_beta == pytest.approx(record["sigma_beta"]) and record["sigma_beta"] > 0
    assert 1 <= resolved.model.lora_rank <= 8
