"""FDMA uplink with Rayleigh block fading [seed II-C; defaults and path-loss form ours].

Heterogeneous clients (docs/algorithms.md §7): each client's distance, transmit power and device speed
are drawn once from the configured distributions, seeded, and enter the simulated clock.
Client i sits at a fixed distance (uniform in [d_min, d_max], seeded) with path loss
PL_i = PL(1 km) + slope * log10(d_i / 1 km) dB. Each round it draws |g_i|^2 ~ Exp(1) (Rayleigh
block fading, a pure function of (seed, round, client)), so h_i = |g_i|^2 10^(-PL_i / 10) and
gamma_i = P_i h_i / (N0 Bw), P_i lognormal around P when channel.tx_power_sigma_db > 0.
With bandwidth share b_i, R_i = b_i Bw log2(1 + gamma_i) and the upload
of bits_i takes bits_i / R_i [seed (6)]; noise over the whole Bw is what makes eq. (41) allocate
bandwidth inversely to log2(1 + gamma_i).
"""

from __future__ import annotations

import numpy as np

from fedlora_ray.config import ChannelConfig

_FADING_STREAM = 3
_PLACEMENT_STREAM = 4
_POWER_STREAM = 5


class Uplink:
    def __init__(self, cfg: ChannelConfig, num_clients: int, seed: int) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([seed, _PLACEMENT_STREAM])
        self.distance_m = rng.uniform(cfg.distance_min_m, cfg.distance_max_m, num_clients)
        self.path_loss_db = cfg.path_loss_db_at_1km + cfg.path_loss_slope_db * np.log10(
            self.distance_m / 1000
        )
        noise_w = 10 ** ((cfg.noise_dbm_per_hz - 30) / 10) * cfg.bandwidth_hz
        if cfg.compute_samples_per_s > 0:
            self.samples_per_s = cfg.compute_samples_per_s * np.exp(
                rng.normal(0, cfg.compute_sigma, num_clients)
            )
        else:
            self.samples_per_s = np.full(num_clients, np.inf)
        # its own stream, so that turning the power spread on leaves distances and speeds as they were
        power_rng = np.random.default_rng([seed, _POWER_STREAM])
        self.tx_power_w = cfg.tx_power_w * 10 ** (
            power_rng.normal(0, cfg.tx_power_sigma_db, num_clients) / 10
        )
        self.mean_snr = self.tx_power_w * 10 ** (-self.path_loss_db / 10) / noise_w  # E|g|^2 = 1
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

    def compute_seconds(
        self, clients: np.ndarray, samples: np.ndarray, ratio: np.ndarray | float = 1.0
    ) -> np.ndarray:
        """Local training time: samples / speed, times omega + (1 - omega) s for a client that
        trains a sketch (or a truncated rank) of ratio s [docs/algorithms.md §7, ours]."""
        omega = self.cfg.compute_fixed_share
        return samples / self.samples_per_s[clients] * (omega + (1 - omega) * np.asarray(ratio))


def equal_shares(k: int) -> np.ndarray:
    return np.full(k, 1.0 / max(k, 1))  # no participants (independent sampling): no shares


def equal_delay_shares(snr: np.ndarray) -> np.ndarray:
    """Seed eq. (41): b_i proportional to 1 / log2(1 + gamma_i), using the whole band, so that
    equal payloads finish together."""
    inv = 1.0 / np.log2(1 + snr)
    return inv / inv.sum()


def equal_finish_shares(
    bits: np.ndarray, spectral_eff: np.ndarray, compute_s: np.ndarray, bandwidth_hz: float
) -> tuple[np.ndarray, float]:
    """Bandwidth shares with which every participant finishes compute + upload at the same time
    T [docs/algorithms.md §7]: b_i = bits_i / (Bw se_i (T - c_i)), with T the root of sum_i b_i = 1 (the
    whole band used), found by bisection. A client with nothing to send gets no band. Returns
    (shares, T)."""
    bits = np.asarray(bits, dtype=np.float64)
    compute_s = np.asarray(compute_s, dtype=np.float64)
    sending = bits > 0
    if not sending.any():
        return np.zeros_like(bits), float(compute_s.max(initial=0.0))
    alone = bits[sending] / (bandwidth_hz * spectral_eff[sending])  # upload time with the whole band
    c = compute_s[sending]
    lo, hi = float(c.max()), float(c.max() + alone.sum())  # at hi every term is <= its share of 1
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if float(np.sum(alone / np.maximum(mid - c, 1e-300))) > 1:
            lo = mid
        else:
            hi = mid
    shares = np.zeros_like(bits)
    shares[sending] = alone / (hi - c)
    shares[sending] /= shares[sending].sum()  # exactly the whole band, despite bisection rounding
    return shares, hi
