"""tsfa: the two-stage controller [paper IV; docs/algorithms.md §5].

Offline stage, once before any model is built: with the average channel (E|g|^2 = 1) of K
clients, r* = argmin over 1 <= r <= R of Phi(r, rho*(r)), exhaustively, with rho*(r) from
Lemma 2; after the pilot calibration of the bound's profile when ``controller.calibrate``.
Online stage: as osfa, at r*.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedlora_ray.atomic_write import write_bytes
from fedlora_ray.channel import Uplink
from fedlora_ray.compress.bits import Dims, entry_bits, lora_entries
from fedlora_ray.config import RunConfig, replace
from fedlora_ray.control.base import register_controller
from fedlora_ray.control.bound import bound
from fedlora_ray.control.osfa import OSFA


def rho_for_budget(cfg: RunConfig, r: int, dims: Dims, inv_se_sum: float) -> float:
    """Lemma 2 [paper IV-B]: with equal delays at D_bar and the whole band used,
    rho*(r) = clip(Bw D_bar / (M(r) q sum_i 1/log2(1+gamma_i)), rho_min, 1)."""
    ctl = cfg.controller
    q = entry_bits(cfg.compression.value_bits, r, dims)
    rho = cfg.channel.bandwidth_hz * ctl.delay_budget_s / (lora_entries(r, dims) * q * inv_se_sum)
    return float(min(1.0, max(ctl.rho_min, rho)))


def offline_rank(cfg: RunConfig, dims: Dims, uplink: Uplink) -> tuple[int, list[float]]:
    """r* = argmin_{1 <= r <= R} Phi(r, rho*(r)) with the average channel of K clients.
    Returns r* and Phi per rank."""
    k = cfg.federation.clients_per_round
    inv_se_sum = k * float(np.mean(1.0 / np.log2(1 + uplink.mean_snr)))
    ranks = range(1, cfg.controller.max_rank + 1)
    values = [bound(cfg.controller, r, rho_for_budget(cfg, r, dims, inv_se_sum)) for r in ranks]
    return int(np.argmin(values)) + 1, values


@register_controller
class TSFA(OSFA):
    name = "tsfa"
    chooses_rank = True

    @classmethod
    def prepare(cls, cfg: RunConfig, run_dir: str | Path | None = None) -> RunConfig:
        """The config with model.lora_rank set to the offline r*."""
        from fedlora_ray.tasks import lora_module_dims

        if cfg.controller.calibrate:
            from fedlora_ray.control.calibrate import pilot_calibration

            record = pilot_calibration(cfg)
            cfg = replace(cfg, f"controller.sigma_beta={record['sigma_beta']}")
            print(f"pilot calibration: sigma_beta = {record['sigma_beta']:.3f}", flush=True)
            if run_dir is not None:
                write_bytes(Path(run_dir) / "calibration.json", json.dumps(record, indent=2).encode())
        uplink = Uplink(cfg.channel, cfg.federation.num_clients, cfg.federation.seed)
        r_star, _ = offline_rank(cfg, lora_module_dims(cfg.model), uplink)
        return replace(cfg, f"model.lora_rank={r_star}")
