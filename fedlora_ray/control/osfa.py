"""osfa: the given rank; keep ratio and bandwidth by the Lyapunov online stage [paper IV-C, V-B].

Each round, with the observed channels of S_t, rho(t) minimises V Phi(r, rho) + Q(t) D_t(rho)
over [rho_min, 1], D_t(rho) = rho M(r) q / Bw sum_i 1 / log2(1 + gamma_i) under the
equal-delay split (39); then b_i by (41) [docs/algorithms.md §5].
"""

from __future__ import annotations

import numpy as np

from fedlora_ray.compress.registry import compressor_spec
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.control import online
from fedlora_ray.control.base import Controller, ControllerState, register_controller


@register_controller
class OSFA(Controller):
    name = "osfa"

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        if compressor_spec(cfg.compression.method).dense:
            raise ConfigError(
                f"config field 'controller.kind' = {cfg.controller.kind!r}: it sets the keep ratio, so "
                f"compression.method must be a sparsifier (e.g. 'soft'), not {cfg.compression.method!r}"
            )

    def keep_ratio(self, state: ControllerState, snr: np.ndarray) -> float:
        ctl, ch = self.cfg.controller, self.cfg.channel
        a = self.entries * self.q_bits / ch.bandwidth_hz * float(np.sum(1.0 / np.log2(1 + snr)))
        s = ctl.V * ctl.c_s * self.rank  # V times the rho-dependent part of Phi
        solve = online.solve_cvxpy if ctl.solver == "cvxpy" else online.solve_scalar
        return solve(s, state.queue * a, ctl.rho_min)
