"""FLASC baseline [seed V]: the K largest-magnitude entries of the B and A uploads together.

Per module by default, as the seed compares at equal per-module budgets; ``flasc_scope:
global`` ranks all modules at once with the summed budget, as FLASC's public code does [code].
The original has no error feedback [code]; here it follows ``compression.error_feedback``.
"""

from __future__ import annotations

import torch

from fedlora_ray.compress.base import Factors, PerModule, flat, largest
from fedlora_ray.compress.bits import module_budget
from fedlora_ray.config import CompressionConfig


def select(
    ub: torch.Tensor,
    ua: torch.Tensor,
    budget: int,
    local_b: torch.Tensor,
    local_a: torch.Tensor,
    cfg: CompressionConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """The ``budget`` largest |entries| of [vec(U_B); vec(U_A)], ascending; equal magnitudes go
    to the lower flat position first [ours; docs/algorithms.md §3]."""
    return largest(flat(ub, ua).abs(), budget)


def select_global(update: Factors, cfg: CompressionConfig) -> dict[str, torch.Tensor]:
    """Top-(sum of K_m) over the concatenation of every module's update, in the update's module
    order; equal magnitudes go to the lower position in that concatenation first [ours;
    docs/algorithms.md §3]."""
    vecs = {m: flat(ub, ua) for m, (ub, ua) in update.items()}
    budget = sum(
        module_budget(cfg.keep_ratio, ub.shape[0], ua.shape[1], ub.shape[1]) for ub, ua in update.values()
    )
    allv = torch.cat([v.abs() for v in vecs.values()])
    chosen = torch.zeros(allv.numel(), dtype=torch.bool)
    chosen[largest(allv, budget)] = True
    out, start = {}, 0
    for m, v in vecs.items():
        out[m] = torch.nonzero(chosen[start : start + v.numel()]).flatten()
        start += v.numel()
    return out


class Flasc(PerModule):
    """Per module, or over all modules at once when ``compression.flasc_scope`` is global."""

    def __init__(self) -> None:
        super().__init__(select)

    def positions(
        self, update: Factors, local: Factors, cfg: CompressionConfig, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        if cfg.flasc_scope == "global":
            return select_global(update, cfg)
        return super().positions(update, local, cfg, gen)
