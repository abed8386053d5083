"""One round on the simulated clock, shared by the real round and controller-only mode
[docs/algorithms.md §4; paper (6)-(7)].

Given who took part, the bits each actually sent and the examples each trained on: compute takes
samples / speed, scaled by the share of rank components a client trains; the controller splits
the band once bits and compute times are known; the upload takes bits / rate; the round lasts
until its slowest participant has computed and uploaded. The controller then observes the
slowest upload (TSFA's virtual queue).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlora_ray.channel import Uplink
from fedlora_ray.control.base import Controller, ControllerState, RoundPlan


@dataclass(frozen=True)
class ClockStep:
    """The round on the simulated clock, per participant in sampled order."""

    shares: np.ndarray  # bandwidth share b_i
    upload: np.ndarray  # upload time, s
    compute: np.ndarray  # compute time, s
    upload_delay: float  # slowest upload: what the delay budget limits
    round_delay: float  # slowest compute + upload: the clock's step
    controller: ControllerState  # the controller's state after observing the round


def clock_step(
    uplink: Uplink,
    controller: Controller,
    state: ControllerState,
    plan: RoundPlan,
    sampled: np.ndarray,
    bits: np.ndarray,
    samples: np.ndarray,
    rank: int,
) -> ClockStep:
    """``bits``: what each participant sent; ``samples``: examples x local epochs each trained."""
    ratio = state.components[sampled] / rank
    compute = uplink.compute_seconds(sampled, samples, ratio)
    bits = np.asarray(bits, dtype=np.float64)
    shares = controller.bandwidth(plan, bits, compute)
    upload = uplink.upload_seconds(bits, shares, plan.snr)
    upload_delay = float(upload.max(initial=0.0))
    round_delay = float((upload + compute).max(initial=0.0))
    observed = controller.observe(state, upload_delay)
    return ClockStep(shares, upload, compute, upload_delay, round_delay, observed)
