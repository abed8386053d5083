"""Privacy accounting with Google's dp-accounting: the epsilon a run has spent after each round,
and the noise multiplier that meets a target (epsilon, delta) [docs/algorithms.md §14].

Each round releases one Gaussian mechanism of noise multiplier sigma (sensitivity C, noise
standard deviation sigma C). How clients are sampled sets the event the accountant composes:

- central DP, independent sampling: ``PoissonSampledDpEvent(q_max, Gaussian(sigma))`` (each
  client joins with its own q_i; the largest bounds every client's amplification), under the
  add-or-remove-one-client relation;
- central DP, uniform K of N: ``SampledWithoutReplacementDpEvent(N, K, Gaussian(sigma / 2))``,
  under the replace-one-client relation (a fixed-size sample cannot lose a member; replacing a
  client's data moves the clipped sum by up to 2C, twice the add-or-remove sensitivity); the RDP
  accountant only (dp-accounting's PLD accountant does not take this event);
- local DP: the server sees who took part, so sampling amplifies nothing: ``Gaussian(sigma / 2)``
  per round a client takes part (two clipped updates differ by up to 2C), counted for every
  round: the bound of a client that is always sampled.

Epsilon after t rounds is computed for each t (the accountant's bound for t compositions), so
it is a function of the round alone: a resumed run logs the same values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from fedlora_ray.config import ConfigError

SIGMA_MAX = 1000.0  # the largest noise multiplier the calibration searches
_EPSILON_GUARD = 1e6  # reported as infinite beyond this (no noise)


@dataclass(frozen=True)
class Release:
    """What one round releases, as the accountant needs it."""

    kind: str  # "central" or "local"
    sampling: str  # "uniform" or "independent"
    num_clients: int  # N
    per_round: int  # K (uniform)
    q_max: float  # the largest q_i (independent)
    accountant: str  # "rdp" or "pld"

    @property
    def local(self) -> bool:
        return self.kind == "local"

    @property
    def poisson(self) -> bool:
        """Clients join independently (Poisson sampling), not K of N."""
        return self.sampling == "independent"


def _dp():  # type: ignore[no-untyped-def]
    import dp_accounting  # here: loading a config needs neither scipy nor the accountants

    return dp_accounting


def round_event(release: Release, sigma: float):  # type: ignore[no-untyped-def]
    """The DpEvent of one round at noise multiplier ``sigma``."""
    dp = _dp()
    if release.local:
        return dp.GaussianDpEvent(sigma / 2)
    if release.poisson:
        return dp.PoissonSampledDpEvent(release.q_max, dp.GaussianDpEvent(sigma))
    # replace-one: swapping a client's data moves the clipped sum by up to 2C, so the noise is
    # sigma / 2 times that sensitivity
    half = dp.GaussianDpEvent(sigma / 2)
    return dp.SampledWithoutReplacementDpEvent(release.num_clients, release.per_round, half)


def new_accountant(release: Release):  # type: ignore[no-untyped-def]
    dp = _dp()
    if release.accountant == "pld":
        return dp.pld.PLDAccountant()
    relation = (
        dp.NeighboringRelation.REPLACE_ONE
        if not release.local and not release.poisson
        else dp.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    return dp.rdp.RdpAccountant(neighboring_relation=relation)


@functools.lru_cache(maxsize=64)
def _one_round_rdp(release: Release, sigma: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(orders, RDP at each order) of one round: t rounds have t times it."""
    accountant = new_accountant(release)
    accountant.compose(round_event(release, sigma))
    return tuple(accountant._orders), tuple(accountant._rdp)  # the accountant's own curve


@functools.lru_cache(maxsize=4096)
def epsilon_after(release: Release, sigma: float, rounds: int, delta: float) -> float:
    """Epsilon spent after ``rounds`` rounds at ``delta``. RDP composes by adding the one round's
    curve ``rounds`` times (exact: RDP adds up over rounds); PLD composes the round's loss
    distribution with itself (``SelfComposedDpEvent``, about 0.6 s a value here)."""
    if rounds == 0:
        return 0.0
    if release.accountant == "rdp":
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        orders, rdp = _one_round_rdp(release, sigma)
        epsilon = float(compute_epsilon(orders, [rounds * r for r in rdp], delta)[0])
    else:
        accountant = new_accountant(release)
        accountant.compose(_dp().SelfComposedDpEvent(round_event(release, sigma), rounds))
        epsilon = float(accountant.get_epsilon(delta))
    return np.inf if epsilon > _EPSILON_GUARD else epsilon


def calibrate_sigma(release: Release, epsilon: float, delta: float, rounds: int) -> float:
    """The smallest noise multiplier whose ``rounds`` rounds spend at most ``epsilon`` at
    ``delta`` (dp-accounting's ``calibrate_dp_mechanism``); ConfigError when even SIGMA_MAX
    does not."""
    dp = _dp()
    if epsilon_after(release, SIGMA_MAX, rounds, delta) > epsilon:
        raise ConfigError(
            f"config field 'privacy.target_epsilon' = {epsilon}: no noise multiplier up to {SIGMA_MAX:g} "
            f"spends at most that over {rounds} rounds at delta {delta:g} with this sampling; raise "
            "privacy.target_epsilon or privacy.delta, or run fewer rounds"
        )
    sigma = dp.calibrate_dp_mechanism(
        lambda: new_accountant(release),
        lambda s: dp.SelfComposedDpEvent(round_event(release, s), rounds),
        epsilon,
        delta,
        bracket_interval=dp.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-4,
    )
    return float(sigma)
