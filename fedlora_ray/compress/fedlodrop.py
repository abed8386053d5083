"""FedLoDrop baseline [seed V]: whole rank components dropped at random.

Keeps floor(K_m / (d + k)) components chosen uniformly, the same indices in B's columns and
A's rows, so it sends at most K_m entries.
"""

from __future__ import annotations

import torch

from fedlora_ray.compress.base import rank_component_positions
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
    ranks = torch.randperm(r, generator=gen)[: budget // (d + k)]
    return torch.sort(rank_component_positions(d, r, k)[ranks].reshape(-1)).values
