"""Client sampling, aggregation weights and per-client seeds: pure functions of (seed, round, client).

``SAMPLINGS`` maps ``sampling.kind`` to a sampler; each draws the round's participants and
gives the weights their updates enter the aggregate with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

_SAMPLE_STREAM = 1
_CLIENT_STREAM = 2


def sample_clients(seed: int, round_: int, num_clients: int, k: int) -> np.ndarray:
    """K distinct clients uniformly at random [paper V: "10 clients are uniformly sampled"],
    sorted so that aggregation sums in a fixed order."""
    rng = np.random.default_rng([seed, round_, _SAMPLE_STREAM])
    return np.sort(rng.choice(num_clients, size=k, replace=False))


def sample_independent(seed: int, round_: int, q: np.ndarray) -> np.ndarray:
    """Each client joins with its own probability q_i, independently [docs/algorithms.md §7],
    sorted. The set may be empty, or hold more or fewer than K = sum_i q_i clients."""
    rng = np.random.default_rng([seed, round_, _SAMPLE_STREAM])
    return np.flatnonzero(rng.random(len(q)) < q)


def client_seed(seed: int, round_: int, client: int) -> int:
    """The seed of client ``client``'s local work in ``round_`` (shuffling, dropout)."""
    ss = np.random.SeedSequence([seed, round_, client, _CLIENT_STREAM])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class RoundWeights:
    """How the round's uploads enter X <- X + sum_i w_i Delta_i.

    ``values`` w_i per uploader; ``share`` their data shares p_i; ``inclusion`` their sampling
    probabilities q_i (None when every client is equally likely, as in uniform sampling);
    ``total`` what sum_i w_i stands for: 1 for renormalised weights, sum_i p_i / q_i (whose
    expectation is 1) for unbiased ones."""

    values: np.ndarray
    share: np.ndarray
    inclusion: np.ndarray | None
    total: float


class Sampling:
    name: ClassVar[str] = ""

    def __init__(self, seed: int, num_clients: int, k: int) -> None:
        self.seed, self.num_clients, self.k = seed, num_clients, k

    def sample(self, round_: int, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def weights(self, participants: np.ndarray, data_share: np.ndarray, q: np.ndarray) -> RoundWeights:
        raise NotImplementedError


class UniformSampling(Sampling):
    """K of N without replacement; weights p_i renormalised over S_t (FedAvg [paper II-B];
    1 / |S_t| for equal data)."""

    name = "uniform"

    def sample(self, round_: int, q: np.ndarray) -> np.ndarray:
        return sample_clients(self.seed, round_, self.num_clients, self.k)

    def weights(self, participants: np.ndarray, data_share: np.ndarray, q: np.ndarray) -> RoundWeights:
        p = data_share[participants]
        return RoundWeights(p / p.sum() if len(p) else p, p, None, 1.0)


class IndependentSampling(Sampling):
    """Bernoulli(q_i) per client; weights p_i / q_i, NOT renormalised, which makes the aggregate
    unbiased: E[sum_i 1[i in S_t] p_i / q_i Delta_i] = sum_i p_i Delta_i [docs/algorithms.md §7]."""

    name = "independent"

    def sample(self, round_: int, q: np.ndarray) -> np.ndarray:
        return sample_independent(self.seed, round_, q)

    def weights(self, participants: np.ndarray, data_share: np.ndarray, q: np.ndarray) -> RoundWeights:
        p, qi = data_share[participants], q[participants]
        values = p / qi
        return RoundWeights(values, p, qi, float(values.sum()))


SAMPLINGS: dict[str, type[Sampling]] = {s.name: s for s in (UniformSampling, IndependentSampling)}
