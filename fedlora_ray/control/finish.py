"""finish: the given rank, ratios and sampling; the band split after local training, from the bits
each participant actually has to send and its compute time, so that all finish together
[docs/algorithms.md §7]."""

from __future__ import annotations

import numpy as np

from fedlora_ray.channel import equal_finish_shares
from fedlora_ray.control.base import Controller, RoundPlan, register_controller


@register_controller
class Finish(Controller):
    name = "finish"

    def bandwidth(self, plan: RoundPlan, bits: np.ndarray, compute_s: np.ndarray) -> np.ndarray:
        se = self.uplink.spectral_efficiency(plan.snr)
        shares, _ = equal_finish_shares(bits, se, compute_s, self.cfg.channel.bandwidth_hz)
        return shares
