"""The server's step on the aggregated update: plain (eta_s = 1 is averaging) or Adam.

FSLoRA writes its server update as X <- X - eta_s * (1/|S_t|) sum_i (X - X_i) * M_i [seed 003;
ALGORITHMS 6]; its public code optionally runs Adam on that pseudo-gradient. Both act on B, A and
the head alike.
"""

from __future__ import annotations

import torch

from fedlora_ray.config import AlgorithmConfig
from fedlora_ray.lora.adapter import Adapter


def _tensors(adapter: Adapter) -> list[torch.Tensor]:
    return [t for pair in adapter.lora.values() for t in pair] + list(adapter.head.values())


def _rebuild(like: Adapter, flat: list[torch.Tensor]) -> Adapter:
    it = iter(flat)
    lora = {m: (next(it), next(it)) for m in like.lora}
    head = {k: next(it) for k in like.head}
    return Adapter(lora, head)


class ServerOptimizer:
    def __init__(self, cfg: AlgorithmConfig) -> None:
        self.cfg = cfg
        self.steps = 0
        self.m: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    def step(self, global_adapter: Adapter, update: Adapter) -> Adapter:
        """X <- X + eta_s U (sgd), or Adam with gradient -U."""
        xs, us = _tensors(global_adapter), _tensors(update)
        lr = self.cfg.server_lr
        if self.cfg.server_optimizer == "sgd":
            return _rebuild(global_adapter, [x + lr * u for x, u in zip(xs, us)])
        if not self.m:
            self.m = [torch.zeros_like(x) for x in xs]
            self.v = [torch.zeros_like(x) for x in xs]
        self.steps += 1
        b1, b2, eps = self.cfg.server_beta1, self.cfg.server_beta2, self.cfg.server_eps
        out = []
        for i, (x, u) in enumerate(zip(xs, us)):
            g = -u
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            m_hat = self.m[i] / (1 - b1**self.steps)
            v_hat = self.v[i] / (1 - b2**self.steps)
            out.append(x - lr * m_hat / (v_hat.sqrt() + eps))
        return _rebuild(global_adapter, out)
