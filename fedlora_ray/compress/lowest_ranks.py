"""HetLoRA baseline at the shared budget [seed V]: the lowest rank indices first.

Rank 0's component (column 0 of U_B, then row 0 of U_A), then rank 1's, ... until K_m entries
are used; the last component may be cut short (its order within the component is ours). The
heterogeneous-rank HetLoRA with zero-padded, norm-weighted aggregation is a separate algorithm.
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
    by_rank = rank_component_positions(d, r, ua.shape[1]).reshape(-1)  # rank 0's entries first
    return torch.sort(by_rank[:budget]).values
