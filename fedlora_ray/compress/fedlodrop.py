"""FedLoDrop baseline [seed V]: whole rank components dropped at random.

Keeps a fixed number of components chosen uniformly, the same indices in B's columns and A's
rows [paper: §V, which fixes the count instead of the original's Bernoulli dropping]. The count
comes from the module budget K_m: floor(K_m / (d + k)) by default, so it sends at most K_m
entries, or the nearest whole number with ``compression.fedlodrop_rounding = nearest``
[ours; docs/algorithms.md §3].
"""

from __future__ import annotations

import torch

from fedlora_ray.compress.base import rank_component_positions
from fedlora_ray.compress.bits import whole_components
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
    d, r = ub.shape
    k = ua.shape[1]
    count = whole_components(budget, d, k, r, cfg.fedlodrop_rounding)
    # the permutation is drawn whatever the count, so the stream is the same under either rounding
    ranks = torch.randperm(r, generator=gen)[:count]
    return torch.sort(rank_component_positions(d, r, k)[ranks].reshape(-1)).values
