"""The one payload-bit model: what an upload costs, shared by the compressors, the schemes,
the uplink controllers and the adaptive objective [docs/algorithms.md §2, §5, §6; ours].

A LoRA module m has M_m = r (d_m + k_m) entries. A sparse upload of ``kept`` of them costs
kept * q_value bits for the values plus their positions: ceil(log2 M_m) bits each, or an M_m-bit
bitmap when that is smaller. A dense upload sends no positions. A structured upload (FSLoRA's
sketch, HetLoRA's first ranks, FFA's B) sends whole rank components; FSLoRA adds ceil(log2 r)
bits per component index. The controllers of the SOFT paper price an entry at a single q
[§5, Lemma 2]: a value plus its position in the largest module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Dims = Sequence[tuple[int, int]]  # (d_m, k_m) = (out, in) features of every LoRA module
# one module's upload without training: (d, k, r, k_i, keep ratio, value bits) -> (entries, bits)
ModuleUpload = Callable[[int, int, int, int, float, int], tuple[int, int]]


def index_bits(size: int) -> int:
    """Bits that name one of ``size`` positions: ceil(log2 size), at least 1."""
    return max(1, math.ceil(math.log2(size)))


def lora_entries(rank: int, dims: Dims) -> int:
    """M(r) = r * sum_m (d_m + k_m)."""
    return rank * sum(d + k for d, k in dims)


def module_budget(keep_ratio: float, d: int, k: int, r: int) -> int:
    """K_m = round(rho * r * (d + k)) entries of module m [paper III-B; docs/algorithms.md §2]."""
    return min(r * (d + k), max(0, round(keep_ratio * r * (d + k))))


def payload_bits(kept: int, size: int, value_bits: int, dense: bool) -> int:
    """kept * q_value, plus the positions: ceil(log2 M) bits each, or an M-bit bitmap when that
    is smaller; a dense upload sends no positions [docs/algorithms.md §2, ours]."""
    if dense:
        return size * value_bits
    return kept * value_bits + min(kept * index_bits(size), size)


def entry_bits(value_bits: int, rank: int, dims: Dims) -> int:
    """q, the controllers' price of one entry: a value plus its position in the largest module
    (the paper's q is per parameter) [docs/algorithms.md §5]."""
    return value_bits + math.ceil(math.log2(rank * max(d + k for d, k in dims)))


def component_upload_bits(components: int, rank: int, d: int, k: int, value_bits: int, indexed: bool) -> int:
    """One module's structured upload: ``components`` whole rank components, (d + k) values each,
    plus ceil(log2 r) bits per component index when the set is not implied (FSLoRA's sketch)
    [docs/algorithms.md §6]."""
    names = components * math.ceil(math.log2(rank)) if indexed and rank > 1 else 0
    return components * (d + k) * value_bits + names


def full_sketch_bits(rank: int, dims: Dims, value_bits: int) -> float:
    """Bits of a sketch-ratio-1 FSLoRA upload, r (d + k) values per module plus r component
    indices; a ratio s sends s times this. The adaptive objective's payload model
    [docs/algorithms.md §7]."""
    return float(sum(component_upload_bits(rank, rank, d, k, value_bits, indexed=True) for d, k in dims))


# ---- one module's upload without training: (entries sent, bits), for controller-only mode
# [docs/algorithms.md §4, "Controller-only mode"]; each compressor and scheme names its own.
# comps: the client's k_i; rho: the keep ratio; vb: bits per value.


def dense_upload(d: int, k: int, r: int, comps: int, rho: float, vb: int) -> tuple[int, int]:
    """``none`` (ILoRA): all r (d + k) entries, no positions."""
    size = r * (d + k)
    return size, payload_bits(size, size, vb, dense=True)


def budget_upload(d: int, k: int, r: int, comps: int, rho: float, vb: int) -> tuple[int, int]:
    """SOFT, RLoRA, HetLoRA-at-budget and FLASC: exactly K_m entries, with their positions."""
    kept = module_budget(rho, d, k, r)
    return kept, payload_bits(kept, r * (d + k), vb, dense=False)


def whole_components(budget: int, d: int, k: int, r: int, rounding: str) -> int:
    """FedLoDrop's count of whole rank components for a module budget of K_m = ``budget``
    entries, at most r [paper: §V, "precisely the number of rank components specified by the
    target sparsification ratio"; the rounding is ours, docs/algorithms.md §3]: 'floor' gives
    floor(K_m / (d + k)), so the upload never exceeds K_m; 'nearest' gives K_m / (d + k) rounded
    to the nearest integer, halves up, computed in integers as floor((2 K_m + c) / (2 c)) with
    c = d + k, so no float decides a tie."""
    c = d + k
    if rounding == "floor":
        return min(r, budget // c)
    if rounding == "nearest":
        return min(r, (2 * budget + c) // (2 * c))
    raise ValueError(f"unknown FedLoDrop rounding {rounding!r}: 'floor' or 'nearest'")


def whole_component_upload(d: int, k: int, r: int, comps: int, rho: float, vb: int) -> tuple[int, int]:
    """FedLoDrop: floor(K_m / (d + k)) whole components, with their positions."""
    kept = whole_components(module_budget(rho, d, k, r), d, k, r, "floor") * (d + k)
    return kept, payload_bits(kept, r * (d + k), vb, dense=False)


def nearest_component_upload(d: int, k: int, r: int, comps: int, rho: float, vb: int) -> tuple[int, int]:
    """FedLoDrop with ``compression.fedlodrop_rounding = nearest``: round(K_m / (d + k)) whole
    components, halves up, with their positions."""
    kept = whole_components(module_budget(rho, d, k, r), d, k, r, "nearest") * (d + k)
    return kept, payload_bits(kept, r * (d + k), vb, dense=False)


def sketch_upload(d: int, k: int, r: int, comps: int, rho: float, vb: int) -> tuple[int, int]:
    """FSLoRA: k_i components, with their indices."""
    return comps * (d + k), component_upload_bits(comps, r, d, k, vb, indexed=True)


def prefix_upload(d: int, k: int, r: int, comps: int, rho: float, vb: int) -> tuple[int, int]:
    """HetLoRA: the first k_i components, no indices."""
    return comps * (d + k), component_upload_bits(comps, r, d, k, vb, indexed=False)


def b_only_upload(d: int, k: int, r: int, comps: int, rho: float, vb: int) -> tuple[int, int]:
    """FFA-LoRA: all of B's d r entries, no positions."""
    return d * r, payload_bits(d * r, d * r, vb, dense=True)
