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


def client_seed(seed: int, round_: int, client: int) -> int:
    """The seed of client ``client``'s local work in ``round_`` (shuffling, dropout)."""
    ss = np.random.SeedSequence([seed, round_, client, _CLIENT_STREAM])
    return int(ss.generate_state(1, dtype=np.uint32)[0])
