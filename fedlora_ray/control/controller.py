"""Per-round uplink plans: keep ratio and bandwidth shares, from the channels the driver drew.

- equal: rank and keep ratio as configured, bandwidth split equally;
- fixed: rank and keep ratio as configured, bandwidth by eq. (41) [seed IV-C];
- osfa:  rank as configured, keep ratio by the online stage, bandwidth by (41) [seed V-B];
- tsfa:  rank r* from the offline stage (``resolve_rank``), then as osfa [seed IV];
- finish, adaptive: bandwidth split after local training, from the bits each participant
  actually has to send and its compute time, so that all finish together [ALGORITHMS 7]
  (adaptive's q_i and s_i are chosen once, by ``control.adaptive``).
The virtual queue Q(t+1) = max(Q(t) + D(t) - D_bar, 0) [seed (30)] runs for every kind, so
every run logs how far it is from the delay budget.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedlora_ray.channel import Uplink, equal_delay_shares, equal_finish_shares, equal_shares
from fedlora_ray.config import RunConfig, replace
from fedlora_ray.control import online
from fedlora_ray.control.bound import bound


@dataclass(frozen=True)
class RoundPlan:
    keep_ratio: float
    shares: np.ndarray  # bandwidth share of each sampled client, in sampled order
    gain: np.ndarray  # h_i = |g_i|^2 10^(-PL_i/10)
    snr: np.ndarray
    bound: float  # Phi(r, rho) of the chosen rho
    queue: float  # Q(t) the choice was made with
    solve_seconds: float


def bits_per_entry(value_bits: int, r: int, dims: list[tuple[int, int]]) -> int:
    """q: a value plus its position in the largest module (the seed's q is per parameter)."""
    return value_bits + math.ceil(math.log2(r * max(d + k for d, k in dims)))


def lora_entries(r: int, dims: list[tuple[int, int]]) -> int:
    """M(r) = r * sum_m (d_m + k_m)."""
    return r * sum(d + k for d, k in dims)


def rho_for_budget(cfg: RunConfig, r: int, dims: list[tuple[int, int]], inv_se_sum: float) -> float:
    """Lemma 2 [seed IV-B]: with equal delays at D_bar and the whole band used,
    rho*(r) = clip(Bw D_bar / (M(r) q sum_i 1/log2(1+gamma_i)), rho_min, 1)."""
    ctl = cfg.controller
    q = bits_per_entry(cfg.compression.value_bits, r, dims)
    rho = cfg.channel.bandwidth_hz * ctl.delay_budget_s / (lora_entries(r, dims) * q * inv_se_sum)
    return float(min(1.0, max(ctl.rho_min, rho)))


def offline_rank(cfg: RunConfig, dims: list[tuple[int, int]], uplink: Uplink) -> tuple[int, list[float]]:
    """Offline stage [seed IV-B]: with the average channel (E|g|^2 = 1) of K clients,
    r* = argmin_{1 <= r <= R} Phi(r, rho*(r)), exhaustively. Returns r* and Phi per rank."""
    k = cfg.federation.clients_per_round
    inv_se_sum = k * float(np.mean(1.0 / np.log2(1 + uplink.mean_snr)))
    ranks = range(1, cfg.controller.max_rank + 1)
    values = [bound(cfg.controller, r, rho_for_budget(cfg, r, dims, inv_se_sum)) for r in ranks]
    return int(np.argmin(values)) + 1, values


def resolve_rank(cfg: RunConfig, run_dir: str | Path | None = None) -> RunConfig:
    """For TSFA, the config with model.lora_rank set to the offline r* (before any model is
    built), after the pilot calibration when ``controller.calibrate``; other kinds keep the
    configured rank."""
    if cfg.controller.kind != "tsfa":
        return cfg
    from fedlora_ray.lora.model import lora_module_dims

    if cfg.controller.calibrate:
        from fedlora_ray.control.calibrate import pilot_calibration

        record = pilot_calibration(cfg)
        cfg = replace(cfg, f"controller.sigma_beta={record['sigma_beta']}")
        print(f"pilot calibration: sigma_beta = {record['sigma_beta']:.3f}", flush=True)
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "calibration.json").write_text(json.dumps(record, indent=2))

    uplink = Uplink(cfg.channel, cfg.federation.num_clients, cfg.federation.seed)
    r_star, _ = offline_rank(cfg, lora_module_dims(cfg.model), uplink)
    return replace(cfg, f"model.lora_rank={r_star}")


class UplinkController:
    def __init__(self, cfg: RunConfig, dims: list[tuple[int, int]], uplink: Uplink) -> None:
        self.cfg, self.dims, self.uplink = cfg, dims, uplink
        self.rank = cfg.model.lora_rank
        self.queue = 0.0
        comp = cfg.compression
        self.fixed_rho = comp.keep_ratio if comp.method != "none" else 1.0
        self.q = bits_per_entry(comp.value_bits, self.rank, dims)
        self.entries = lora_entries(self.rank, dims)

    def plan(self, round_: int, sampled: np.ndarray) -> RoundPlan:
        ctl, ch = self.cfg.controller, self.cfg.channel
        fading = self.uplink.fading(round_, sampled)
        snr = self.uplink.mean_snr[sampled] * fading
        gain = fading * 10 ** (-self.uplink.path_loss_db[sampled] / 10)
        start = time.perf_counter()
        rho = self.fixed_rho
        if ctl.kind in ("osfa", "tsfa"):
            a = self.entries * self.q / ch.bandwidth_hz * float(np.sum(1.0 / np.log2(1 + snr)))
            s = ctl.V * ctl.c_s * self.rank  # V times the rho-dependent part of Phi
            solve = online.solve_cvxpy if ctl.solver == "cvxpy" else online.solve_scalar
            rho = solve(s, self.queue * a, ctl.rho_min)
        solve_seconds = time.perf_counter() - start
        shares = equal_shares(len(sampled)) if ctl.kind == "equal" else equal_delay_shares(snr)
        return RoundPlan(rho, shares, gain, snr, bound(ctl, self.rank, rho), self.queue, solve_seconds)

    def bandwidth(self, plan: RoundPlan, bits: np.ndarray, compute_s: np.ndarray) -> np.ndarray:
        """The shares the uplink is actually split with: the plan's, or for 'finish' and
        'adaptive' the equal-finish split of the bits and compute times now known."""
        if self.cfg.controller.kind not in ("finish", "adaptive"):
            return plan.shares
        se = self.uplink.spectral_efficiency(plan.snr)
        shares, _ = equal_finish_shares(bits, se, compute_s, self.cfg.channel.bandwidth_hz)
        return shares

    def observe(self, upload_delay_s: float) -> None:
        """Q(t+1) = max(Q(t) + D(t) - D_bar, 0) [seed (30)], with the delay actually incurred."""
        self.queue = max(self.queue + upload_delay_s - self.cfg.controller.delay_budget_s, 0.0)
