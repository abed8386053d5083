"""The convergence bound Phi(r, rho) as three named terms [terms seed IV-A: Assumptions 2-3 and
Lemma 1; functional forms and constants ours, docs/algorithms.md §5]."""

from __future__ import annotations

import numpy as np

from fedlora_ray.config import ControllerConfig


def rank_term(cfg: ControllerConfig, r: int) -> float:
    """c_r * sum_{j>r}^{R} sigma_j^2 with sigma_j = j^(-beta) (Assumption 2)."""
    j = np.arange(r + 1, cfg.max_rank + 1, dtype=np.float64)
    return float(cfg.c_r * np.sum(j ** (-2 * cfg.sigma_beta)))


def sparsification_term(cfg: ControllerConfig, r: int, rho: float) -> float:
    """c_s * r * (1 - rho) / rho^2 (Lemma 1, Stich's contraction)."""
    return cfg.c_s * r * (1 - rho) / rho**2


def covariance_term(cfg: ControllerConfig, r: int) -> float:
    """c_c * kappa_het * r (Assumption 3)."""
    return cfg.c_c * cfg.kappa_het * r


def bound(cfg: ControllerConfig, r: int, rho: float) -> float:
    return rank_term(cfg, r) + sparsification_term(cfg, r, rho) + covariance_term(cfg, r)
