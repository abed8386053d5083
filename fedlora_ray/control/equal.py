"""equal: the given rank and keep ratio, the band split equally among the round's clients."""

from __future__ import annotations

import numpy as np

from fedlora_ray.channel import equal_shares
from fedlora_ray.control.base import Controller, register_controller


@register_controller
class Equal(Controller):
    name = "equal"

    def planned_shares(self, snr: np.ndarray) -> np.ndarray:
        return equal_shares(len(snr))
