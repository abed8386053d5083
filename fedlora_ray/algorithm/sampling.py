"""Client sampling and per-client seeds: pure functions of (seed, round, client)."""

from __future__ import annotations

import numpy as np

_SAMPLE_STREAM = 1
_CLIENT_STREAM = 2


def sample_clients(seed: int, round_: int, num_clients: int, k: int) -> np.ndarray:
    """K distinct clients uniformly at random [seed V: "10 clients are uniformly sampled"],
    sorted so that aggregation sums in a fixed order."""
    rng = np.random.default_rng([seed, round_, _SAMPLE_STREAM])
    return np.sort(rng.choice(num_clients, size=k, replace=False))


def sample_independent(seed: int, round_: int, q: np.ndarray) -> np.ndarray:
    """Each client joins with its own probability q_i, independently [ALGORITHMS 7], sorted.
    The set may be empty, or hold more or fewer than K = sum_i q_i clients."""
    rng = np.random.default_rng([seed, round_, _SAMPLE_STREAM])
    return np.flatnonzero(rng.random(len(q)) < q)


def aggregation_weights(
    kind: str, participants: np.ndarray, data_share: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """The weight of each participant's update in X <- X + sum_i w_i Delta_i.

    uniform: p_i renormalised over S_t (FedAvg [seed II-B]; 1 / |S_t| for equal data).
    independent: p_i / q_i, NOT renormalised, which makes the aggregate unbiased:
    E[sum_i 1[i in S_t] p_i / q_i Delta_i] = sum_i p_i Delta_i [ALGORITHMS 7]."""
    p = data_share[participants]
    if kind == "independent":
        return p / q[participants]
    return p / p.sum() if len(p) else p


def client_seed(seed: int, round_: int, client: int) -> int:
    """The seed of client ``client``'s local work in ``round_`` (shuffling, dropout)."""
    ss = np.random.SeedSequence([seed, round_, client, _CLIENT_STREAM])
    return int(ss.generate_state(1, dtype=np.uint32)[0])
