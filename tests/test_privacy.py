"""Client-level differential privacy (docs/algorithms.md §14): the accountant is dp-accounting's,
the per-client sensitivity holds for every scheme, the noise has its stated spread, impossible
budgets are refused before any work, a run stops within privacy.max_epsilon, and the draws keep
serial = Ray and resume = one go bit for bit."""

from __future__ import annotations

import math

import dp_accounting as dp
import numpy as np
import pandas as pd
import pytest
import torch

from fedlora_ray.algorithm import round as round_module
from fedlora_ray.config import ConfigError
from fedlora_ray.control.controller_only import simulate_control
from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.serial import SerialBackend, resume_serial, run_serial
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.privacy.accountant import Release, epsilon_after
from fedlora_ray.privacy.mechanism import central_noise_generator, central_release, contributions_sum
from fedlora_ray.rundir.checkpoint import checkpoint_round, checkpoints
from tests.conftest import tiny_config
from tests.resume_helpers import assert_same_run

CENTRAL = ["privacy.kind=central", "privacy.noise_multiplier=1.0", "privacy.clip_norm=0.05"]


# ---- the accountant
@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_poisson_sampling_accounts_as_dp_accounting_does(accountant):
    release = Release("central", "independent", 100, 10, 0.1, accountant)
    event = dp.SelfComposedDpEvent(dp.PoissonSampledDpEvent(0.1, dp.GaussianDpEvent(1.0)), 30)
    direct = dp.rdp.RdpAccountant() if accountant == "rdp" else dp.pld.PLDAccountant()
    direct.compose(event)
    assert epsilon_after(release, 1.0, 30, 1e-5) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)


def test_uniform_sampling_accounts_as_sampling_without_replacement_under_replace_one():
    """K of N without replacement; replacing one client's data moves the clipped sum by 2C, so
    the event's Gaussian has half the noise multiplier."""
    release = Release("central", "uniform", 100, 10, 0.1, "rdp")
    direct = dp.rdp.RdpAccountant(neighboring_relation=dp.NeighboringRelation.REPLACE_ONE)
    half = dp.GaussianDpEvent(0.5)
    direct.compose(dp.SelfComposedDpEvent(dp.SampledWithoutReplacementDpEvent(100, 10, half), 30))
    assert epsilon_after(release, 1.0, 30, 1e-5) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)


def test_local_dp_accounts_every_round_without_amplification():
    release = Release("local", "uniform", 100, 10, 0.1, "rdp")
    direct = dp.rdp.RdpAccountant()
    direct.compose(dp.SelfComposedDpEvent(dp.GaussianDpEvent(2.0), 12))
    assert epsilon_after(release, 4.0, 12, 1e-5) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)


def test_a_target_epsilon_is_met_by_the_solved_noise_and_logged_each_round(tmp_path):
    cfg = tiny_config("federation.rounds=3", "privacy.kind=central", "privacy.target_epsilon=30")
    summary = run_serial(cfg, tmp_path / "run")
    rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
    eps = rounds["dp_epsilon"].to_numpy()
    assert (np.diff(eps) > 0).all() and eps[-1] <= 30 and eps[-1] == pytest.approx(30, rel=1e-2)
    assert summary["dp_epsilon"] == eps[-1] and summary["dp_noise_multiplier"] > 0


def test_an_impossible_budget_is_refused_before_any_work(tmp_path):
    cfg = tiny_config("privacy.kind=central", "privacy.target_epsilon=0.001")
    with pytest.raises(ConfigError, match="privacy.target_epsilon.*no noise multiplier up to 1000"):
        FederatedRun(cfg, SerialBackend, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["privacy.kind=central"], "privacy.noise_multiplier"),
        (
            ["privacy.kind=local", "privacy.noise_multiplier=1", "privacy.target_epsilon=2"],
            "privacy.target_epsilon",
        ),
        (["privacy.kind=central", "privacy.noise_multiplier=1", "privacy.delta=0.5"], "privacy.delta"),
        (
            ["privacy.kind=central", "privacy.noise_multiplier=1", "privacy.accountant=pld"],
            "privacy.accountant",
        ),
        (["privacy.kind=laplace"], "privacy.kind"),
    ],
)
def test_privacy_fields_are_checked_with_the_config(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tiny_config(*overrides)


# ---- the mechanism on real uploads
SCHEMES = {
    "fedavg-none": ["compression.method=none"],
    "fedavg-soft-ef": ["compression.method=soft", "compression.keep_ratio=0.3"],
    "fedavg-flasc": ["compression.method=flasc", "compression.keep_ratio=0.3"],
    "fedavg-rlora": ["compression.method=rlora", "compression.keep_ratio=0.3"],
    "fedavg-fedlodrop": ["compression.method=fedlodrop", "compression.keep_ratio=0.5"],
    "fslora": ["algorithm.kind=fslora", "compression.method=none", "algorithm.client_ratios=[0.5,1.0]"],
    "hetlora": ["algorithm.kind=hetlora", "compression.method=none", "algorithm.client_ratios=[0.5,1.0]"],
    "ffa": ["algorithm.kind=ffa", "compression.method=none"],
    "independent": ["sampling.kind=independent", "compression.method=soft", "compression.keep_ratio=0.3"],
}


def _captured_releases(monkeypatch, cfg, rounds: int, before_round=None) -> list[dict]:
    """The arguments of every central release of a real run of ``rounds`` rounds."""
    seen: list[dict] = []
    real = round_module.central_release

    def capture(global_adapter, held, omega, k_bar, clip_norm, sigma, generator, trains_a):
        seen.append({"global": global_adapter, "held": held, "omega": omega, "C": clip_norm})
        return real(global_adapter, held, omega, k_bar, clip_norm, sigma, generator, trains_a)

    monkeypatch.setattr(round_module, "central_release", capture)
    run = FederatedRun(cfg, SerialBackend)
    for t in range(rounds):
        if before_round is not None:
            before_round(run, t + 1)
        run.run_round()
    return seen


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_removing_one_client_moves_the_pre_noise_sum_by_at_most_C(name, monkeypatch):
    """Every scheme's real uploads, two rounds (the error memory of round 1 enters round 2): the
    clipped sum with and without each client differs by at most C, and clipping was active."""
    cfg = tiny_config("federation.rounds=2", "federation.lr=0.05", *CENTRAL, *SCHEMES[name])
    releases = _captured_releases(monkeypatch, cfg, 2)
    assert len(releases) == 2
    clipped_any = False
    for r in releases:
        total, norms = contributions_sum(r["global"], r["held"], r["omega"], r["C"])
        clipped_any |= any(n > r["C"] for n in norms)
        for j in range(len(r["held"])):
            rest = [h for i, h in enumerate(r["held"]) if i != j]
            omega = [w for i, w in enumerate(r["omega"]) if i != j]
            without, _ = contributions_sum(r["global"], rest, omega, r["C"])
            assert _norm([a - b for a, b in zip(total, without)]) <= r["C"] * (1 + 1e-6)
    assert clipped_any  # C = 0.05 binds: the bound is tested where it matters


def test_error_memory_never_carries_unclipped_information_into_a_release(monkeypatch):
    """Round 1 leaves each client an error memory; before round 2 every stored memory is
    multiplied by 1e6. Round 2's uploads carry it, and each contribution to the release is
    still at most C (the whole weighted upload is clipped, memory included)."""

    def inflate(run, t):
        if t == 2:
            store = run.state.clients
            for c in list(store):
                state = store[c]
                state["error"] = {m: (b * 1e6, a * 1e6) for m, (b, a) in state["error"].items()}

    cfg = tiny_config(
        "federation.rounds=2", "federation.num_clients=3", *CENTRAL, "compression.method=soft",
        "compression.keep_ratio=0.3", "runtime.client_store_mem_mb=64",
    )  # fmt: skip
    releases = _captured_releases(monkeypatch, cfg, 2, inflate)
    second = releases[1]
    total, norms = contributions_sum(second["global"], second["held"], second["omega"], second["C"])
    assert max(norms) > 1e3 * second["C"]  # the inflated memory reached the uploads
    assert _norm(total) <= len(second["held"]) * second["C"] * (1 + 1e-6)


def test_the_noise_has_the_stated_spread_and_spares_frozen_tensors():
    """Nothing uploaded (every client equal to the global adapter): the release is the noise
    alone. Over 100,080 coordinates the sample standard deviation of N(0, (sigma C)^2) lies
    within 4.5 standard errors of sigma C (a false alarm rate of 7e-6 for a correct mechanism;
    the seed is fixed, so the test is deterministic). FFA's frozen A gets none."""
    g = torch.Generator().manual_seed(0)
    lora = {f"m{i}": (torch.zeros(500, 8), torch.randn(8, 500, generator=g)) for i in range(25)}
    global_adapter = Adapter(lora, {"weight": torch.zeros(10, 8)})
    sigma, clip, k_bar = 1.7, 0.3, 4.0
    release = central_release(
        global_adapter, [global_adapter.clone()] * 3, [1.0] * 3, k_bar, clip, sigma,
        central_noise_generator(0, 1), trains_a=False,
    )  # fmt: skip
    assert release.clipped == 0
    released = [b for b, _a in release.update.lora.values()] + [release.update.head["weight"]]
    noise = torch.cat([t.reshape(-1) for t in released]) * k_bar  # 100,080 coordinates of B and the head
    std, target = float(noise.double().std()), sigma * clip
    assert abs(std - target) <= 4.5 * target / math.sqrt(2 * noise.numel())
    assert abs(float(noise.double().mean())) <= 4.5 * target / math.sqrt(noise.numel())
    assert all(bool((a == 0).all()) for _b, a in release.update.lora.values())  # frozen A: no noise


# ---- runs: stop within budget, resume = one go, serial = Ray
def test_a_run_stops_at_the_last_round_within_max_epsilon_with_its_checkpoint(tmp_path, capsys):
    probe = FederatedRun(tiny_config(*CENTRAL, "federation.rounds=6"), SerialBackend)
    eps = [probe.ctx.privacy.epsilon(t) for t in range(1, 7)]
    limit = (eps[3] + eps[4]) / 2  # rounds 1-4 fit, round 5 does not
    cfg = tiny_config(*CENTRAL, "federation.rounds=6", "checkpoint.every=3", f"privacy.max_epsilon={limit}")
    summary = run_serial(cfg, tmp_path / "run")
    assert summary["rounds"] == 4 and summary["stopped_by_privacy_budget"]
    assert "round 5 would spend epsilon" in capsys.readouterr().out
    assert [checkpoint_round(p) for p in checkpoints(tmp_path / "run")] == [3, 4]
    assert pd.read_parquet(tmp_path / "run" / "rounds.parquet")["dp_epsilon"].max() <= limit
    again = resume_serial(tmp_path / "run")
    assert again["rounds"] == 4


@pytest.mark.parametrize("kind", ["central", "local"])
def test_a_private_run_resumed_equals_one_go(kind, tmp_path):
    common = [f"privacy.kind={kind}", "privacy.noise_multiplier=0.8", "privacy.clip_norm=0.1",
              "compression.method=soft", "compression.keep_ratio=0.3", "checkpoint.every=2"]  # fmt: skip
    run_serial(tiny_config(*common, "federation.rounds=4"), tmp_path / "one-go")
    run_serial(tiny_config(*common, "federation.rounds=2"), tmp_path / "run")
    resume_serial(tmp_path / "run", ["federation.rounds=4"])
    assert_same_run(tmp_path / "run", tmp_path / "one-go")


def test_noise_changes_the_model_and_is_drawn_from_the_seed(tmp_path):
    variants = {"plain": [], "dp": CENTRAL, "dp-again": CENTRAL, "dp-seed1": [*CENTRAL, "federation.seed=1"]}
    runs = {}
    for name, extra in variants.items():
        run_serial(tiny_config(*extra), tmp_path / name)
        runs[name] = pd.read_parquet(tmp_path / name / "rounds.parquet")
    assert runs["dp"]["test_loss"].tolist() == runs["dp-again"]["test_loss"].tolist()
    assert runs["dp"]["test_loss"].tolist() != runs["plain"]["test_loss"].tolist()
    assert runs["dp"]["test_loss"].tolist() != runs["dp-seed1"]["test_loss"].tolist()


def test_control_reports_epsilon_over_rounds_without_training():
    cfg = tiny_config("privacy.kind=central", "privacy.noise_multiplier=1.0")
    rounds = simulate_control(cfg, 20).rounds
    release = Release("central", "uniform", 6, 3, 0.5, "rdp")
    assert rounds["dp_epsilon"].tolist() == [epsilon_after(release, 1.0, t, 1e-5) for t in range(1, 21)]


@pytest.mark.ray
def test_a_private_run_gives_the_same_numbers_on_ray_and_serial(ray_session, tmp_path):
    from actors.launch import run_on_ray

    for kind in ("central", "local"):
        common = [f"privacy.kind={kind}", "privacy.noise_multiplier=0.8", "privacy.clip_norm=0.1",
                  "federation.rounds=2", "compression.method=soft", "compression.keep_ratio=0.3"]  # fmt: skip
        run_serial(tiny_config(*common), tmp_path / f"serial-{kind}")
        run_on_ray(
            tiny_config(*common, "runtime.backend=ray", "runtime.num_actors=2"), tmp_path / f"ray-{kind}"
        )
        a = pd.read_parquet(tmp_path / f"serial-{kind}" / "rounds.parquet")
        b = pd.read_parquet(tmp_path / f"ray-{kind}" / "rounds.parquet")
        for column in ("train_loss", "test_loss", "test_accuracy", "dp_epsilon", "uplink_bits"):
            assert a[column].tolist() == b[column].tolist(), column
