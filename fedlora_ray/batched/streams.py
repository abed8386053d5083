"""Each client's own dropout stream inside a forward that carries several clients [ours;
docs/algorithms.md §12].

The one-client loop seeds the global generator with the client's round seed and lets every
dropout draw its mask from it, in forward order. In a shared forward, ``ClientStreams``
intercepts each dropout (and the dropout inside scaled-dot-product attention) and draws each
slot's mask from that client's own generator, in the shape the client's own batch would have
had: its rows only (not the filler rows of a short last batch), and for text its own sequence
width (a shared batch is padded to the widest client). So on the CPU every client sees exactly
the masks of the one-client loop, whichever clients share its pass; on a GPU the masks are
per-client streams too, though not the bits of CUDA's fused dropout.

Any other random op inside the forward would mix clients' streams, so it raises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_RANDOM_OPS = {
    torch.bernoulli, torch.Tensor.bernoulli_, torch.rand, torch.rand_like, torch.randn,
    torch.randn_like, torch.randint, torch.randint_like, torch.randperm, torch.normal,
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_, torch.Tensor.exponential_,
    torch.multinomial, torch.dropout, torch.native_dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.alpha_dropout, F.feature_alpha_dropout,
}  # fmt: skip


@dataclass(frozen=True)
class Slot:
    """One client's share of the pass's rows: the first ``rows`` of its block of the batch are
    its examples; ``width`` is its own sequence width (None: not text)."""

    generator: torch.Generator
    rows: int
    width: int | None


class ClientStreams(TorchFunctionMode):
    """While active, dropout in the forward draws slot s's masks from ``slots[s].generator``.
    The batch holds ``len(slots)`` blocks of equal height; ``width`` is the batch's sequence
    width (text), which the per-client widths were padded to."""

    def __init__(self, slots: Sequence[Slot], width: int | None) -> None:
        super().__init__()
        self.slots = list(slots)
        self.width = width

    def _seq_dims(self, shape: torch.Size) -> tuple[int, ...]:
        """The dimensions that are sequence positions: dim 1 of hidden states (N x L x d), dims
        2 and 3 of attention weights (N x heads x L x L); none for images."""
        if self.width is None:
            return ()
        dims = {3: (1,), 4: (2, 3)}.get(len(shape))
        if dims is None or any(shape[d] != self.width for d in dims):
            raise RuntimeError(
                f"runtime.clients_per_pass > 1: a dropout input of shape {tuple(shape)} is not laid "
                f"out as text hidden states or attention weights of width {self.width}; set "
                "runtime.clients_per_pass=1 for this model"
            )
        return dims

    def noise(self, x: torch.Tensor, keep: float) -> torch.Tensor:
        """The dropout multiplier of ``x``: Bernoulli(keep) / keep, each slot's mask drawn from its
        client's stream in that client's own shape; 1 / keep on filler rows and padding."""
        noise = torch.ones_like(x)
        height = x.shape[0] // len(self.slots)
        dims = self._seq_dims(x.shape)
        for s, slot in enumerate(self.slots):  # a draw per client: the streams are separate
            index: list[slice] = [slice(s * height, s * height + slot.rows)] + [slice(None)] * (x.dim() - 1)
            shape = [slot.rows, *x.shape[1:]]
            for d in dims:
                assert slot.width is not None
                index[d] = slice(0, slot.width)
                shape[d] = slot.width
            mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(
                keep, generator=slot.generator
            )
            noise[tuple(index)] = mask
        return noise.div_(keep)

    def _dropout(
        self, x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
    ) -> torch.Tensor:
        if not training or p == 0:
            return x
        noise = self.noise(x, 1.0 - p)
        return x.mul_(noise) if inplace else x * noise

    def _attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """softmax(q k^T / sqrt(E) + mask) with dropout, then times v: the reference maths of
        scaled-dot-product attention, with the dropout drawn per client."""
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            rep = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(rep, -3), v.repeat_interleave(rep, -3)
        root = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
        scores = (q * root) @ (k.transpose(-2, -1) * root)
        if is_causal:
            causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            scores = (
                scores.masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool
                else scores + attn_mask
            )
        weights = scores.softmax(-1)
        return (weights * self.noise(weights, 1.0 - dropout_p)) @ v

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.dropout:
            return self._dropout(*args, **kwargs)
        if func is F.scaled_dot_product_attention and (
            kwargs.get("dropout_p") or (len(args) > 4 and args[4])
        ):
            return self._attention(*args, **kwargs)
        if func in _RANDOM_OPS:
            raise RuntimeError(
                f"runtime.clients_per_pass > 1 gives each client its own dropout stream, but the "
                f"model calls {getattr(func, '__name__', func)}, which would draw one stream for "
                "all clients of the pass; set runtime.clients_per_pass=1 for this model"
            )
        return func(*args, **kwargs)
