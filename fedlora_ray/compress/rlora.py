"""RLoRA baseline [seed V]: K_m entries of the module's B and A uploads uniformly at random."""

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
    size = ub.numel() + ua.numel()
    return torch.sort(torch.randperm(size, generator=gen)[:budget]).values
