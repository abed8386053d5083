"""The wireless uplink at the driver: fading draws, rates and delays, and the simulated clock."""

from fedlora_ray.channel.uplink import Uplink, equal_delay_shares, equal_finish_shares, equal_shares

__all__ = ["Uplink", "equal_delay_shares", "equal_finish_shares", "equal_shares"]
