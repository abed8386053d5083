"""A run's privacy plan: the mechanism, its noise multiplier (given, or solved for a target
epsilon before the first round) and the epsilon spent after each round [docs/algorithms.md §14]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.privacy.accountant import Release, calibrate_sigma, epsilon_after


@dataclass(frozen=True)
class PrivacyPlan:
    kind: str  # "central" or "local"
    sigma: float  # noise multiplier: the noise's standard deviation is sigma * clip_norm
    clip_norm: float
    delta: float
    max_epsilon: float  # 0: no limit
    release: Release
    solved: bool  # sigma was solved from privacy.target_epsilon

    @property
    def central(self) -> bool:
        """The driver clips and noises the aggregate (else each client noises its own update)."""
        return not self.release.local

    def epsilon(self, rounds: int) -> float:
        """Epsilon spent after ``rounds`` rounds at ``delta``."""
        return epsilon_after(self.release, self.sigma, rounds, self.delta)

    def allows(self, rounds: int) -> bool:
        """Whether ``rounds`` rounds stay within privacy.max_epsilon."""
        return self.max_epsilon == 0 or self.epsilon(rounds) <= self.max_epsilon

    def describe(self, rounds: int) -> str:
        how = "solved for privacy.target_epsilon" if self.solved else "privacy.noise_multiplier"
        sampling = (
            f"Poisson sampling, q_max {self.release.q_max:.4g}"
            if self.release.poisson
            else f"{self.release.per_round} of {self.release.num_clients} without replacement"
        )
        if self.release.local:
            sampling = "no amplification (the server sees who takes part)"
        return (
            f"privacy: {self.kind} DP, clip {self.clip_norm:g}, noise multiplier {self.sigma:.4g} ({how}); "
            f"{sampling}; epsilon {self.epsilon(rounds):.3g} after {rounds} rounds at delta "
            f"{self.delta:g} ({self.release.accountant.upper()})"
        )


def plan_privacy(cfg: RunConfig, q: np.ndarray) -> PrivacyPlan | None:
    """The run's plan, or None without privacy. ``q``: each client's sampling probability (the
    controller's plan; K / N under uniform sampling). ConfigError when no noise multiplier up to
    the calibration's bound meets privacy.target_epsilon."""
    p, fed = cfg.privacy, cfg.federation
    if p.kind not in ("central", "local"):  # none
        return None
    release = Release(
        kind=p.kind,
        sampling=cfg.sampling.kind,
        num_clients=fed.num_clients,
        per_round=fed.clients_per_round,
        q_max=float(np.max(q)),
        accountant=p.accountant,
    )
    solved = p.noise_multiplier == 0
    sigma = calibrate_sigma(release, p.target_epsilon, p.delta, fed.rounds) if solved else p.noise_multiplier
    plan = PrivacyPlan(p.kind, sigma, p.clip_norm, p.delta, p.max_epsilon, release, solved)
    if p.max_epsilon and not plan.allows(1):
        raise ConfigError(
            f"config field 'privacy.max_epsilon' = {p.max_epsilon}: one round already spends "
            f"epsilon {plan.epsilon(1):.3g} at noise multiplier {sigma:.4g}; raise it, or the noise"
        )
    return plan
