"""The compressor interface: budget, payload, bits and distortion, shared by every method.

A compressor turns a client's error-compensated update into what it sends. ``COMPRESSORS``
(``fedlora_ray.compress.registry``) maps each ``compression.method`` to a light entry that
builds one; the sparsifiers (SOFT and the baselines) pick positions module by module with a
``Selector``, and ``none`` (ILoRA) sends everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from fedlora_ray.compress.bits import (
    ModuleUpload,
    budget_upload,
    dense_upload,
    module_budget,
    payload_bits,
    whole_component_upload,
)
from fedlora_ray.config import CompressionConfig
from fedlora_ray.lora.adapter import Adapter

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (B-like, A-like)
# A selector picks the flat positions of one module's update to send:
# (U_B, U_A, budget, local B, local A, cfg, generator) -> int64 positions.
Selector = Callable[
    [torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor, CompressionConfig, torch.Generator],
    torch.Tensor,
]


@dataclass
class ModulePayload:
    """One module's upload: values at flat positions of [vec(U_B); vec(U_A)].
    ``index`` None means every entry, in order (a dense upload needs no positions)."""

    index: torch.Tensor | None
    value: torch.Tensor


@dataclass
class Compressed:
    payload: dict[str, ModulePayload]
    kept: int  # LoRA entries sent
    bits: int  # what sending them costs: values plus positions
    distortion: float  # ||U - C(U)||^2 / ||U||^2 over all modules (0 for a zero update)


class Compressor(Protocol):
    dense: bool  # sends every entry (no sparsification, no error memory needed)
    orthogonal: bool  # the client adds SOFT's orthogonal regulariser to its loss [paper eq. (7)]

    def compress(
        self, update: Factors, local: Factors, cfg: CompressionConfig, gen: torch.Generator
    ) -> Compressed: ...

    # one module's (entries, bits) at keep ratio rho without an update to compress, for
    # controller-only mode: (d, k, r, components, rho, value_bits) -> (entries, bits)
    module_upload: ModuleUpload


def flat(ub: torch.Tensor, ua: torch.Tensor) -> torch.Tensor:
    return torch.cat([ub.reshape(-1), ua.reshape(-1)])


def rank_component_positions(d: int, r: int, k: int) -> torch.Tensor:
    """(r, d + k) table: row j holds the flat positions of rank j's component, column j of B
    (B[i, j] at i * r + j) then row j of A (A[j, c] after all of B, at d * r + j * k + c)."""
    j = torch.arange(r).unsqueeze(1)
    b_pos = torch.arange(d).unsqueeze(0) * r + j
    a_pos = d * r + j * k + torch.arange(k).unsqueeze(0)
    return torch.cat([b_pos, a_pos], dim=1)


class Dense:
    """ILoRA: the whole update, no positions [paper V, the upper bound]."""

    dense = True
    orthogonal = False

    def __init__(self) -> None:
        self.module_upload: ModuleUpload = dense_upload

    def compress(
        self, update: Factors, local: Factors, cfg: CompressionConfig, gen: torch.Generator
    ) -> Compressed:
        payload: dict[str, ModulePayload] = {}
        kept = bits = 0
        for m, (ub, ua) in update.items():
            vec = flat(ub, ua)
            payload[m] = ModulePayload(None, vec.clone())
            kept += vec.numel()
            bits += payload_bits(vec.numel(), vec.numel(), cfg.value_bits, dense=True)
        return Compressed(payload, kept, bits, 0.0)


class PerModule:
    """A sparsifier that sends K_m = round(rho r (d + k)) positions of each module, chosen by
    ``select`` [docs/algorithms.md §2-3]."""

    dense = False

    def __init__(self, select: Selector, orthogonal: bool = False, whole_components: bool = False) -> None:
        """``whole_components``: ``select`` keeps whole rank components only (FedLoDrop), so
        the payload model counts floor(K_m / (d + k)) components rather than K_m entries."""
        self.select = select
        self.orthogonal = orthogonal
        self.module_upload: ModuleUpload = whole_component_upload if whole_components else budget_upload

    def positions(
        self, update: Factors, local: Factors, cfg: CompressionConfig, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        out = {}
        for m, (ub, ua) in update.items():
            d, r = ub.shape
            budget = module_budget(cfg.keep_ratio, d, ua.shape[1], r)
            out[m] = self.select(ub, ua, budget, local[m][0], local[m][1], cfg, gen)
        return out

    def compress(
        self, update: Factors, local: Factors, cfg: CompressionConfig, gen: torch.Generator
    ) -> Compressed:
        positions = self.positions(update, local, cfg, gen)
        payload: dict[str, ModulePayload] = {}
        kept = bits = 0
        err = total = 0.0
        for m, (ub, ua) in update.items():
            vec = flat(ub, ua)
            idx = positions[m]
            value = vec[idx]
            payload[m] = ModulePayload(idx, value.clone())
            kept += idx.numel()
            bits += payload_bits(idx.numel(), vec.numel(), cfg.value_bits, dense=False)
            sq = float(vec.double().square().sum())
            total += sq
            err += sq - float(value.double().square().sum())
        return Compressed(payload, kept, bits, err / total if total > 0 else 0.0)


def dense_update(
    payload: ModulePayload, shape_b: torch.Size, shape_a: torch.Size
) -> tuple[torch.Tensor, torch.Tensor]:
    """C(U) as dense (U_B, U_A): the sent values in place, zeros elsewhere."""
    n_b = shape_b.numel()
    vec = (
        payload.value
        if payload.index is None
        else torch.zeros(n_b + shape_a.numel()).index_put_((payload.index,), payload.value)
    )
    return vec[:n_b].reshape(shape_b), vec[n_b:].reshape(shape_a)


def apply_payload(
    global_adapter: Adapter, payload: dict[str, ModulePayload], head: dict[str, torch.Tensor]
) -> Adapter:
    """What the server holds for a client: the global factors plus the sent update; entries not
    sent keep the global value [docs/algorithms.md §2, ours]."""
    lora = {}
    for m, (b, a) in global_adapter.lora.items():
        ub, ua = dense_update(payload[m], b.shape, a.shape)
        lora[m] = (b + ub, a + ua)
    return Adapter(lora, head)
