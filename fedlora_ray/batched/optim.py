"""AdamW over parameters stacked along a client axis, each client with its own moments and step
count [AdamW as torch.optim.AdamW computes it; the per-client stacking is ours,
docs/algorithms.md §12].

A client that has left the pass (out of batches) is not touched at all: no weight decay, no
momentum step. So every client takes exactly its own number of steps, as in the one-client loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class StackedAdamW:
    def __init__(
        self, params: Sequence[torch.Tensor], lr: float, weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    ) -> None:  # fmt: skip
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        clients = self.params[0].shape[0] if self.params else 0
        self.steps = torch.zeros(clients, dtype=torch.float64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, clients: torch.Tensor | None = None) -> None:
        """One AdamW step of the clients ``clients`` (None: all), from the gradients in ``.grad``."""
        rows = torch.arange(len(self.steps)) if clients is None else clients.cpu()
        self.steps[rows] += 1
        t = self.steps[rows]
        beta1, beta2 = self.betas
        step_size = (self.lr / (1 - beta1**t)).float()
        root_bc2 = ((1 - beta2**t) ** 0.5).float()
        on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for p, m_all, v_all in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            if p.device not in on_device:
                on_device[p.device] = (rows.to(p.device), step_size.to(p.device), root_bc2.to(p.device))
            idx, size, root = on_device[p.device]
            shape = (-1, *([1] * (p.dim() - 1)))
            if clients is None:  # every client steps: update in place, no gather and scatter
                self._update(p, p.grad, m_all, v_all, size.view(shape), root.view(shape))
                continue
            x, m, v = p[idx], m_all[idx], v_all[idx]
            self._update(x, p.grad[idx], m, v, size.view(shape), root.view(shape))
            p[idx], m_all[idx], v_all[idx] = x, m, v

    def _update(
        self, x: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step_size: torch.Tensor,
        root_bc2: torch.Tensor,
    ) -> None:  # fmt: skip
        """torch's AdamW update, in place, with per-client step sizes and bias corrections."""
        beta1, beta2 = self.betas
        x.mul_(1 - self.lr * self.weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / root_bc2).add_(self.eps)
        x.sub_((m / denom) * step_size)  # as addcdiv_: value * (m / denom)
