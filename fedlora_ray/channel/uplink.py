"""FDMA uplink with Rayleigh block fading [seed II-C; defaults and path-loss form ours].

Client i sits at a fixed distance (uniform in [d_min, d_max], seeded) with path loss
PL_i = PL(1 km) + slope * log10(d_i / 1 km) dB. Each round it draws |g_i|^2 ~ Exp(1) (Rayleigh
block fading, a pure function of (seed, round, client)), so h_i = |g_i|^2 10^(-PL_i / 10) and
gamma_i = P h_i / (N0 Bw). With bandwidth share b_i, R_i = b_i Bw log2(1 + gamma_i) and the upload
of bits_i takes bits_i / R_i [seed (6)]; noise over the whole Bw is what makes eq. (41) allocate
bandwidth inversely to log2(1 + gamma_i).
"""

from __future__ import annotations

import numpy as np

from fedlora_ray.config import ChannelConfig

_FADING_STREAM = 3
_PLACEMENT_STREAM = 4


class Uplink:
    def __init__(self, cfg: ChannelConfig, num_clients: int, seed: int) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([seed, _PLACEMENT_STREAM])
        self.distance_m = rng.uniform(cfg.distance_min_m, cfg.distance_max_m, num_clients)
        self.path_loss_db = cfg.path_loss_db_at_1km + cfg.path_loss_slope_db * np.log10(
            self.distance_m / 1000
        )
        noise_w = 10 ** ((cfg.noise_dbm_per_hz - 30) / 10) * cfg.bandwidth_hz
        self.mean_snr = cfg.tx_power_w * 10 ** (-self.path_loss_db / 10) / noise_w  # E|g|^2 = 1
        if cfg.compute_samples_per_s > 0:
            self.samples_per_s = cfg.compute_samples_per_s * np.exp(
                rng.normal(0, cfg.compute_sigma, num_clients)
            )
        else:
            self.samples_per_s = np.full(num_clients, np.inf)
        self.seed = seed

    def fading(self, round_: int, clients: np.ndarray) -> np.ndarray:
        """|g_i|^2 for the given clients in this round: Exp(1), independent per client."""
        return np.array(
            [
                np.random.default_rng([self.seed, round_, int(c), _FADING_STREAM]).exponential()
                for c in clients
            ]
        )

    def snr(self, round_: int, clients: np.ndarray) -> np.ndarray:
        return self.mean_snr[clients] * self.fading(round_, clients)

    def spectral_efficiency(self, snr: np.ndarray) -> np.ndarray:
        return np.log2(1 + snr)

    def upload_seconds(self, bits: np.ndarray, shares: np.ndarray, snr: np.ndarray) -> np.ndarray:
        rate = shares * self.cfg.bandwidth_hz * self.spectral_efficiency(snr)
        return np.where(bits > 0, bits / np.maximum(rate, 1e-300), 0.0)

    def compute_seconds(self, clients: np.ndarray, samples: np.ndarray) -> np.ndarray:
        return samples / self.samples_per_s[clients]


def equal_shares(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


def equal_delay_shares(snr: np.ndarray) -> np.ndarray:
    """Seed eq. (41): b_i proportional to 1 / log2(1 + gamma_i), using the whole band, so that
    equal payloads finish together."""
    inv = 1.0 / np.log2(1 + snr)
    return inv / inv.sum()
