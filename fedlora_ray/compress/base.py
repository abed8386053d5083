"""The compressor interface: budget, payload, bits and distortion, shared by every method."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

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


def module_budget(keep_ratio: float, d: int, k: int, r: int) -> int:
    """K_m = round(rho * r * (d + k)) entries of module m [seed III-B; ALGORITHMS 2]."""
    return min(r * (d + k), max(0, round(keep_ratio * r * (d + k))))


def flat(ub: torch.Tensor, ua: torch.Tensor) -> torch.Tensor:
    return torch.cat([ub.reshape(-1), ua.reshape(-1)])


def rank_component_positions(d: int, r: int, k: int) -> torch.Tensor:
    """(r, d + k) table: row j holds the flat positions of rank j's component, column j of B
    (B[i, j] at i * r + j) then row j of A (A[j, c] after all of B, at d * r + j * k + c)."""
    j = torch.arange(r).unsqueeze(1)
    b_pos = torch.arange(d).unsqueeze(0) * r + j
    a_pos = d * r + j * k + torch.arange(k).unsqueeze(0)
    return torch.cat([b_pos, a_pos], dim=1)


def payload_bits(kept: int, size: int, value_bits: int, dense: bool) -> int:
    """kept * q_value, plus the positions: ceil(log2 M) bits each, or an M-bit bitmap when
    that is smaller; a dense upload sends no positions [ALGORITHMS 2, ours]."""
    if dense:
        return size * value_bits
    return kept * value_bits + min(kept * max(1, math.ceil(math.log2(size))), size)


def _selector(method: str) -> Selector:
    from fedlora_ray.compress import fedlodrop, flasc, hetlora, rlora, soft

    table: dict[str, Selector] = {
        "soft": soft.select,
        "flasc": flasc.select,
        "rlora": rlora.select,
        "hetlora": hetlora.select,
        "fedlodrop": fedlodrop.select,
    }
    return table[method]


def compress_update(
    update: Factors, local: Factors, cfg: CompressionConfig, gen: torch.Generator
) -> Compressed:
    """Sparsify the error-compensated update U of every module with ``cfg.method``."""
    payload: dict[str, ModulePayload] = {}
    kept = bits = 0
    err = total = 0.0
    positions: dict[str, torch.Tensor] = {}
    if cfg.method == "flasc" and cfg.flasc_scope == "global":
        from fedlora_ray.compress.flasc import select_global

        positions = select_global(update, cfg)
    for m, (ub, ua) in update.items():
        vec = flat(ub, ua)
        d, r = ub.shape
        k = ua.shape[1]
        if cfg.method == "none":
            payload[m] = ModulePayload(None, vec.clone())
            kept += vec.numel()
            bits += payload_bits(vec.numel(), vec.numel(), cfg.value_bits, dense=True)
            total += float(vec.double().square().sum())
            continue
        if m not in positions:
            budget = module_budget(cfg.keep_ratio, d, k, r)
            positions[m] = _selector(cfg.method)(ub, ua, budget, local[m][0], local[m][1], cfg, gen)
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
    sent keep the global value [ALGORITHMS 2, ours]."""
    lora = {}
    for m, (b, a) in global_adapter.lora.items():
        ub, ua = dense_update(payload[m], b.shape, a.shape)
        lora[m] = (b + ub, a + ua)
    return Adapter(lora, head)
