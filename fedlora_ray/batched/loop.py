"""The local rounds of up to C clients trained together in one forward and backward pass per
step [ours; docs/algorithms.md §12].

Each client keeps what the one-client loop (``fedlora_ray.train.train_local``) gives it: its
shuffled batches from its round seed, its dropout stream, its own AdamW and its own number of
steps. At step t the clients that still have a batch fill the slots of one concatenated batch;
a slot is as tall as the tallest batch of the step, and a shorter (last) batch is topped up with
copies of its first example at zero loss weight. The objective is

    sum over clients c in the step of  mean loss of c's batch  (+ lambda_o * penalty of c's factors)

so each client's gradient is the gradient of its own loss. A causal LM's mean loss is over the
response tokens of the client's own rows (docs/algorithms.md §13), as in its one-client loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedlora_ray.batched.layers import StackedAdapter, StackedLoRA
from fedlora_ray.batched.optim import StackedAdamW
from fedlora_ray.batched.streams import ClientStreams, Slot
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.lora.orthogonality import orthogonal_penalty
from fedlora_ray.tasks.base import Batches
from fedlora_ray.train import LocalResult, autocast, client_batches


@dataclass(frozen=True)
class ClientWork:
    """One client's local round: its examples, its round seed, and the scale of its rank
    components per module (None: all components, unscaled)."""

    indices: np.ndarray
    seed: int
    scale: dict[str, torch.Tensor] | None = None


def _stacked_scales(work: Sequence[ClientWork], modules: Sequence[str], rank: int) -> dict[str, torch.Tensor]:
    """(C, r) scales per module; clients that train every component get 1."""
    if all(w.scale is None for w in work):
        return {}
    return {
        m: torch.stack([w.scale[m] if w.scale is not None else torch.ones(rank) for w in work])
        for m in modules
    }


def _top_up(batch: torch.Tensor, height: int) -> torch.Tensor:
    """A slot's example indices: the batch, then copies of its first example up to ``height``."""
    return torch.cat([batch, batch[:1].expand(height - len(batch))])


def _row_weights(rows: int, height: int) -> torch.Tensor:
    """Loss weights of a slot: 1 / rows on its examples (their mean), 0 on the filler."""
    return torch.cat([torch.full((rows,), 1.0 / rows), torch.zeros(height - rows)])


def train_pass(
    model: nn.Module,
    data: Batches,
    work: Sequence[ClientWork],
    global_adapter: Adapter,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    device: torch.device,
    train_a: bool = True,
    lambda_o: float = 0.0,
    orth_scaled: bool = False,
    precision: str = "fp32",
) -> list[tuple[LocalResult, Adapter]]:
    """Each client's (LocalResult, locally trained adapter), in the order of ``work``."""
    clients = len(work)
    stacked = StackedAdapter.replicate(global_adapter, clients, device, train_a)
    rank = next(iter(global_adapter.lora.values()))[0].shape[1]
    scales = {m: s.to(device) for m, s in _stacked_scales(work, list(stacked.lora), rank).items()}
    schedule = [client_batches(w.indices, epochs, batch_size, w.seed) for w in work]
    streams = [torch.Generator(device).manual_seed(w.seed) for w in work]  # as torch.manual_seed(seed)
    width_of = getattr(data, "width", None)  # text pads each batch to its longest example
    token_loss = getattr(model, "row_losses", None)  # a causal LM's: NLL of response tokens
    opt = StackedAdamW(stacked.trainable(), lr=lr, weight_decay=weight_decay)
    lora = StackedLoRA(model, stacked)
    losses = torch.zeros(clients, device=device)
    steps = [len(s) for s in schedule]
    model.train()
    with lora.installed():
        for t in range(max(steps, default=0)):
            active = [c for c in range(clients) if t < steps[c]]
            batches = [schedule[c][t] for c in active]
            height = max(len(b) for b in batches)
            filled = torch.cat([_top_up(b, height) for b in batches])
            weight = torch.cat([_row_weights(len(b), height) for b in batches]).to(device)
            slots = None if len(active) == clients else torch.tensor(active)
            lora.select(slots, scales)
            inputs, y = data.batch(filled, device)
            widths: list[int | None] = [width_of(b) if width_of else None for b in batches]
            mode = ClientStreams(
                [Slot(streams[c], len(b), w) for c, b, w in zip(active, batches, widths, strict=True)],
                max(w for w in widths if w is not None) if width_of else None,  # filler copies rows
            )
            with autocast(device, precision), mode:
                if token_loss is not None:
                    nll, tokens = token_loss(*inputs, y)
                else:
                    logits = model(*inputs)
            if token_loss is not None:  # each slot's mean over its real rows' response tokens (§13)
                real = (weight > 0).to(nll.dtype)
                per_client = (nll * real).view(len(active), height).sum(1) / (
                    (tokens * real).view(len(active), height).sum(1).clamp_min(1)
                )
            else:
                per_row = F.cross_entropy(logits.float(), y, reduction="none") * weight
                per_client = per_row.view(len(active), height).sum(1)
            objective = per_client.sum()
            if lambda_o > 0:
                objective = objective + lambda_o * orthogonal_penalty(lora.factors.values(), orth_scaled)
            opt.zero_grad()
            objective.backward()
            opt.step(slots)
            if slots is None:
                losses += per_client.detach()
            else:
                losses.index_add_(0, slots.to(device), per_client.detach())
    model.eval()
    mean = (losses.cpu() / torch.tensor([max(s, 1) for s in steps])).tolist()
    return [(LocalResult(mean[c], steps[c]), stacked.client(c)) for c in range(clients)]
