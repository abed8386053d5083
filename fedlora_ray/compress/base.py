"""The compressor interface: budget, payload, bits and distortion, shared by every method.

A compressor turns what a client sparsifies (its error-compensated update, or with
``compression.target = factors`` its error-compensated factors) into what it sends. ``COMPRESSORS``
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
# A selector picks the flat positions of one module's U (what is sparsified) to send:
# (U_B, U_A, budget, scored B, scored A, cfg, generator) -> int64 positions. The scored factors
# are those SOFT's per-rank scores are taken from (compression.soft_score, docs/algorithms.md §2).
Selector = Callable[
    [torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor, CompressionConfig, torch.Generator],
    torch.Tensor,
]


@dataclass
class ModulePayload:
    """One module's upload: values at flat positions of [vec(U_B); vec(U_A)].
    ``index`` None means every entry, in order (a dense upload needs no positions).
    ``factors``: the values are the client's factors themselves (``compression.target =
    factors``), and an entry not sent is zero [paper: §III-B, eq. (5)]; False: they are an
    update added to the global factors, and an entry not sent keeps the global value [ours]
    (docs/algorithms.md §2)."""

    index: torch.Tensor | None
    value: torch.Tensor
    factors: bool = False


@dataclass
class Compressed:
    payload: dict[str, ModulePayload]
    kept: int  # LoRA entries sent
    bits: int  # what sending them costs: values plus positions
    distortion: float  # ||U - C(U)||^2 / ||U||^2 over all modules (0 for a zero update)


class Compressor(Protocol):
    dense: bool  # sends every entry (no sparsification, no error memory needed)
    orthogonal: bool  # the client adds SOFT's orthogonal regulariser to its loss [paper eq. (7)]
    # the paper gives this method error feedback (SOFT, §III-C); with compression.
    # error_feedback_scope = soft_only only such methods keep an error memory [docs/algorithms.md §3]
    paper_error_feedback: bool

    def compress(
        self, update: Factors, local: Factors, cfg: CompressionConfig, gen: torch.Generator
    ) -> Compressed:
        """Sparsify ``update`` (U, what is sent from); ``local``: the factors SOFT scores."""
        ...

    # one module's (entries, bits) at keep ratio rho without an update to compress, for
    # controller-only mode: (d, k, r, components, rho, value_bits) -> (entries, bits)
    module_upload: ModuleUpload


def flat(ub: torch.Tensor, ua: torch.Tensor) -> torch.Tensor:
    return torch.cat([ub.reshape(-1), ua.reshape(-1)])


def largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` largest entries of a 1-d tensor, ascending. Among equal values the
    lower position is kept first: the set is the first k of a stable descending sort, NaN
    counting as the largest value as in torch.sort [ours; docs/algorithms.md §3].

    torch.topk alone breaks ties by its own selection order, which no API fixes. A full stable
    sort fixes it but is O(n log n), 7 to 30 times slower at n = 1e6. So topk takes k + 1
    entries, in O(n): if the least of them, u, is there once, it is the (k + 1)-th largest and
    every other is larger, so the other k are the only possible set (the usual case with
    continuous values, at topk's cost). Otherwise u is also the k-th largest and equal values
    straddle the cut: every entry above u is kept, then the entries equal to u in ascending
    position until there are k."""
    n = values.numel()
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    if k >= n:
        return torch.arange(n)
    top, picked = torch.topk(values, k + 1, sorted=False)
    low = int(torch.argmin(top))
    u = top[low]
    if bool(torch.isnan(u)):  # topk ranks NaN first; a diverged client, rare: sort them by position
        return torch.sort(torch.sort(values, descending=True, stable=True).indices[:k]).values
    if int(torch.count_nonzero(top == u)) == 1:
        # drop the (k + 1)-th from the sorted positions by a search, cheaper than a mask of k
        pos = torch.sort(picked).values
        at = int(torch.searchsorted(pos, picked[low]))
        return torch.cat([pos[:at], pos[at + 1 :]])
    kept = picked[top > u]  # topk took every entry above u
    return torch.sort(torch.cat([kept, _first_equal(values, u, k - kept.numel())])).values


def _first_equal(values: torch.Tensor, u: torch.Tensor, need: int) -> torch.Tensor:
    """The ``need`` lowest positions of ``values`` that hold ``u``, ascending. Blocks of doubling
    size from the start: with many equal values the first block has enough, and the whole
    vector is scanned at most once."""
    out, start, size = [], 0, 1 << 16
    while need > 0 and start < values.numel():
        hit = torch.nonzero(values[start : start + size] == u).flatten()[:need] + start
        out.append(hit)
        need -= hit.numel()
        start, size = start + size, 2 * size
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def fixed_order_sum_of_squares(x: torch.Tensor) -> torch.Tensor:
    """sum of x^2 over the last dimension, in float64, with the same bits on every CPU [ours;
    docs/algorithms.md §2].

    torch's vectorised reductions add in an order that follows the SIMD width: the float32
    ``torch.linalg.vector_norm`` over a row of 5, 7, 10 or 18 entries gave other bits under
    ATEN_CPU_CAPABILITY default than under avx2. Here every square of a float32 (or half) entry
    is exact in float64, and the squares are added by a fixed pairwise tree of elementwise adds
    (pad with zeros to a power of two, then add neighbours until one is left), each one IEEE-754
    correctly rounded whatever the vector width, thread count or instruction set. The result is
    exact whenever the sum fits in 53 bits (small integers, coarse values) and within about
    log2(n) ulps otherwise."""
    y = x.double()
    y = y * y
    n = y.shape[-1]
    width = 1 << max(0, (n - 1).bit_length())
    if width != n:
        y = torch.nn.functional.pad(y, (0, width - n))
    while y.shape[-1] > 1:
        y = y[..., 0::2] + y[..., 1::2]
    return y[..., 0]


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
    paper_error_feedback = False

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

    def __init__(
        self, select: Selector, orthogonal: bool = False, whole_components: bool = False,
        paper_error_feedback: bool = False,
    ) -> None:  # fmt: skip
        """``whole_components``: ``select`` keeps whole rank components only (FedLoDrop), so
        the payload model counts floor(K_m / (d + k)) components rather than K_m entries.
        ``paper_error_feedback``: the paper gives the method error feedback (SOFT alone)."""
        self.select = select
        self.orthogonal = orthogonal
        self.paper_error_feedback = paper_error_feedback
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
    """What the server holds for a client, which eq. (5) then averages [docs/algorithms.md §1-2]:
    - an update payload (``compression.target = update``): the global factors plus the sent
      update; entries not sent keep the global value [ours];
    - a factor payload (``target = factors``): the sent factors, zero where nothing was sent,
      as the client "sets ... all elements in B and A to zero, except for the selected
      elements" [paper: §III-B]."""
    lora = {}
    for m, (b, a) in global_adapter.lora.items():
        ub, ua = dense_update(payload[m], b.shape, a.shape)
        lora[m] = (ub, ua) if payload[m].factors else (b + ub, a + ua)
    return Adapter(lora, head)
