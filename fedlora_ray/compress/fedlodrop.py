"""FedLoDrop baseline [seed V]: whole rank components dropped at random.

Keeps floor(K_m / (d + k)) components chosen uniformly, the same indices in B's columns and
A's rows, so it sends at most K_m entries.
"""

from __future__ import annotations

import torch

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
    ranks = torch.randperm(r, generator=gen)[: budget // (d + k)].unsqueeze(1)
    b_pos = torch.arange(d).unsqueeze(0) * r + ranks
    a_pos = d * r + ranks * k + torch.arange(k).unsqueeze(0)
    return torch.sort(torch.cat([b_pos, a_pos], dim=1).reshape(-1)).values
