"""The server's step on the aggregated update: plain (eta_s = 1 is averaging) or Adam.

FSLoRA writes its server update as X <- X - eta_s * (1/|S_t|) sum_i (X - X_i) * M_i [FSLoRA;
docs/algorithms.md §6]; its public code optionally runs Adam on that pseudo-gradient. Both act on
B, A and the head alike. The step is a pure function: the moments travel in the run state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedlora_ray.config import AlgorithmConfig
from fedlora_ray.lora.adapter import Adapter


@dataclass(frozen=True)
class ServerOptState:
    """Server Adam's step count and moments, one tensor per trainable tensor (empty for sgd)."""

    steps: int = 0
    m: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)


def server_step(
    cfg: AlgorithmConfig, opt: ServerOptState, global_adapter: Adapter, update: Adapter
) -> tuple[Adapter, ServerOptState]:
    """X <- X + eta_s U (sgd), or Adam with gradient -U; returns the new adapter and moments."""
    xs, us = global_adapter.tensors(), update.tensors()
    lr = cfg.server_lr
    if cfg.server_optimizer == "sgd":
        return global_adapter.with_tensors([x + lr * u for x, u in zip(xs, us)]), opt
    m = opt.m or [torch.zeros_like(x) for x in xs]
    v = opt.v or [torch.zeros_like(x) for x in xs]
    steps = opt.steps + 1
    b1, b2, eps = cfg.server_beta1, cfg.server_beta2, cfg.server_eps
    out, new_m, new_v = [], [], []
    for x, u, mi, vi in zip(xs, us, m, v):
        g = -u
        mi = b1 * mi + (1 - b1) * g
        vi = b2 * vi + (1 - b2) * g * g
        m_hat = mi / (1 - b1**steps)
        v_hat = vi / (1 - b2**steps)
        out.append(x - lr * m_hat / (v_hat.sqrt() + eps))
        new_m.append(mi)
        new_v.append(vi)
    return global_adapter.with_tensors(out), ServerOptState(steps, new_m, new_v)
