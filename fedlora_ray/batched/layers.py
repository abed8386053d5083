"""Per-client LoRA factors stacked along a client axis, and the layers that apply them.

Client c's rows x_c of a concatenated batch go through W0 (shared) plus its own low-rank path:

    y_c = x_c W0^T + (alpha / r) ((x_c A_c^T) diag(s_c)) B_c^T

computed for all clients at once with two batched matmuls over the stacked factors
(C x r x k and C x d x r), no loop over clients [ours; docs/algorithms.md §12]. s_c is the
client's component scale (FSLoRA's sketch, HetLoRA's prefix), or 1. The head is stacked the same
way when it trains. peft still builds the model and owns the saved format; while a
``StackedLoRA`` is installed, peft's own factors sit unused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedlora_ray.lora.adapter import PEFT_PREFIX, Adapter


@dataclass
class StackedAdapter:
    """``lora[m] = (B, A)`` with B of shape (C, d, r) and A of shape (C, r, k), and the head's
    weight (C, labels, hidden) and bias (C, labels) when it trains: C clients' trainable state
    as leaf tensors on the training device."""

    lora: dict[str, tuple[torch.Tensor, torch.Tensor]]
    head: dict[str, torch.Tensor]

    @staticmethod
    def replicate(
        adapter: Adapter, clients: int, device: torch.device, train_a: bool = True
    ) -> StackedAdapter:
        """Every client starts from the global adapter, as each restarts from it in its round."""

        def stack(t: torch.Tensor, grad: bool = True) -> torch.Tensor:
            out = t.to(device=device, dtype=torch.float32).unsqueeze(0).repeat(clients, *([1] * t.dim()))
            return out.requires_grad_(grad)

        lora = {m: (stack(b), stack(a, train_a)) for m, (b, a) in adapter.lora.items()}
        return StackedAdapter(lora, {k: stack(v) for k, v in adapter.head.items()})

    def trainable(self) -> list[torch.Tensor]:
        return [
            t
            for t in [*(x for pair in self.lora.values() for x in pair), *self.head.values()]
            if t.requires_grad
        ]

    def client(self, c: int) -> Adapter:
        """Client ``c``'s factors and head as an ``Adapter`` (CPU copies)."""
        return Adapter(
            {
                m: (b[c].detach().to("cpu", copy=True), a[c].detach().to("cpu", copy=True))
                for m, (b, a) in self.lora.items()
            },
            {k: v[c].detach().to("cpu", copy=True) for k, v in self.head.items()},
        )


def _lora_layers(model: nn.Module) -> dict[str, Any]:
    """module name (as ``lora_parameters`` names it) -> peft's LoRA layer there (a linear or
    convolution ``LoraLayer``, typed Any: its ModuleDicts are read by key)."""
    from peft.tuners.lora import LoraLayer

    return {
        name.removeprefix(PEFT_PREFIX): mod
        for name, mod in model.named_modules()
        if isinstance(mod, LoraLayer)
    }


class StackedLoRA:
    """Makes ``model`` train the clients of a ``StackedAdapter`` in one pass.

    ``select(slots, scales)`` picks, before a step, which clients fill the batch's slots (in
    order; each slot is an equal share of the batch's rows) and their component scales; the
    factors are gathered once per step and shared by the forward and the regulariser."""

    def __init__(self, model: nn.Module, stacked: StackedAdapter) -> None:
        self.model = model
        self.stacked = stacked
        self.layers = _lora_layers(model)
        if self.layers.keys() != stacked.lora.keys():
            raise ValueError("stacked adapter modules do not match the model's LoRA modules")
        for name, layer in self.layers.items():
            base = layer.base_layer
            if isinstance(base, nn.Conv2d) and (base.kernel_size != (1, 1) or base.stride != (1, 1)):
                raise ValueError(f"{name}: stacked LoRA takes linear layers and 1x1 convolutions, not {base}")
        self.factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = stacked.lora
        self.scales: dict[str, torch.Tensor] = {}
        self.head: dict[str, torch.Tensor] = stacked.head

    def select(self, slots: torch.Tensor | None, scales: dict[str, torch.Tensor] | None = None) -> None:
        """``slots``: the clients in the batch's slots (None: all, in order). ``scales[m]``:
        (C, r) component scales of every client (None: 1)."""
        lora, head = self.stacked.lora, self.stacked.head
        if slots is None:
            self.factors, self.head = lora, head
            self.scales = dict(scales or {})
        else:
            self.factors = {m: (b[slots], a[slots]) for m, (b, a) in lora.items()}
            self.head = {k: v[slots] for k, v in head.items()}
            self.scales = {m: s[slots] for m, s in (scales or {}).items()}

    def _lora_forward(self, name: str, layer: Any) -> Callable[..., torch.Tensor]:
        dropout, scaling = layer.lora_dropout["default"], layer.scaling["default"]
        conv = isinstance(layer.base_layer, nn.Conv2d)

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = layer.base_layer(x, *args, **kwargs)
            b, a = self.factors[name]
            slots = b.shape[0]
            s = self.scales.get(name)
            x = dropout(x)
            if conv:  # N x k x H x W: per slot, A_c (r x k) applied at every pixel
                n, k, h, w = x.shape
                z = torch.matmul(a.unsqueeze(1), x.reshape(slots, n // slots, k, h * w))
                if s is not None:
                    z = z * s[:, None, :, None]
                out = torch.matmul(b.unsqueeze(1), z).reshape(n, -1, h, w)
            else:  # N x ... x k: each slot's rows, flattened, times A_c^T, then B_c^T
                z = torch.bmm(x.reshape(slots, -1, x.shape[-1]), a.transpose(1, 2))
                if s is not None:
                    z = z * s[:, None, :]
                out = torch.bmm(z, b.transpose(1, 2)).reshape(*x.shape[:-1], b.shape[1])
            return (result + out * scaling).to(result.dtype)

        return forward

    def _head_forward(self, pooled: torch.Tensor) -> torch.Tensor:
        w, bias = self.head["weight"], self.head["bias"]
        slots = w.shape[0]
        rows = pooled.reshape(slots, -1, pooled.shape[-1])
        return torch.baddbmm(bias.unsqueeze(1), rows, w.transpose(1, 2)).reshape(pooled.shape[0], -1)

    @contextmanager
    def installed(self) -> Iterator[StackedLoRA]:
        """While inside, the LoRA layers (and the head, when it trains) apply the stacked
        factors; peft's forward comes back on exit."""
        patched: list[nn.Module] = []
        try:
            for name, layer in self.layers.items():
                layer.forward = self._lora_forward(name, layer)
                patched.append(layer)
            if self.stacked.head:
                self.model.head.forward = self._head_forward  # type: ignore[union-attr]
                patched.append(self.model.head)  # type: ignore[arg-type]
            yield self
        finally:
            for mod in patched:
                del mod.forward  # the class's forward shows through again
