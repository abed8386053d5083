"""What a client trains and sends under each federated LoRA scheme (``algorithm.kind``).

- fedavg:  the full rank r; the update goes through ``compression.method`` [seed II-B, III].
- fslora:  a sketch of k_i of the r components, one index set I per module per round shared
           by B's columns and A's rows; W0 + B S A with S = (r / k_i) diag(1_I); only B[:, I]
           and A[I, :] train and travel [seed 003; ALGORITHMS 6].
- hetlora: the first r_i components, B[:, :r_i] and A[:r_i, :], unscaled [HetLoRA, as
           summarised in ALGORITHMS 6].
- ffa:     A frozen at its seeded init; only B trains and travels [FFA-LoRA].
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from fedlora_ray.compress import Compressed, ModulePayload
from fedlora_ray.compress.base import flat, rank_component_positions

_RATIO_STREAM = 6
_SKETCH_STREAM = 0x5CE7C4  # the sketch draws from its own stream of the client's round seed

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


def client_ratios(seed: int, num_clients: int, options: tuple[float, ...]) -> np.ndarray:
    """Each client's ratio k_i / r (or r_i / r), drawn uniformly from ``options`` once per run
    [ALGORITHMS 6: heterogeneous ranks from a configured distribution]."""
    rng = np.random.default_rng([seed, _RATIO_STREAM])
    return np.asarray(options, dtype=np.float64)[rng.integers(len(options), size=num_clients)]


def components_for(ratio: float, rank: int) -> int:
    """k_i = round(s_i r), at least 1 (config validation keeps every option >= 1 component)."""
    return max(1, min(rank, round(ratio * rank)))


def sketch_components(kind: str, seed: int, modules: list[str], rank: int, k: int) -> dict[str, torch.Tensor]:
    """The rank components each module trains this round, sorted. fslora: k of r uniformly
    without replacement, one draw per module, from the client's round seed (so the same on any
    process); hetlora: the first k."""
    if kind == "hetlora":
        return {m: torch.arange(k) for m in modules}
    gen = torch.Generator().manual_seed(seed ^ _SKETCH_STREAM)
    return {m: torch.sort(torch.randperm(rank, generator=gen)[:k]).values for m in modules}


def component_scale(kind: str, components: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """The diagonal of S per module: (r / k) on the sketch for fslora (so E[S] = I), 1 on the
    kept ranks for hetlora; 0 elsewhere."""
    out = {}
    for m, idx in components.items():
        s = torch.zeros(rank)
        s[idx] = rank / idx.numel() if kind == "fslora" else 1.0
        out[m] = s
    return out


def restore_outside(params: Mapping[str, tuple[torch.Tensor, torch.Tensor]], global_lora: Factors,
                    components: dict[str, torch.Tensor]) -> None:  # fmt: skip
    """Put the global values back in the entries outside the components. They had zero gradient
    and never entered the forward; only AdamW's decoupled weight decay moved them, so this is the
    same as having frozen them."""
    with torch.no_grad():
        for m, idx in components.items():
            b, a = params[m]
            r = b.shape[1]
            outside = torch.ones(r, dtype=torch.bool)
            outside[idx] = False
            gb, ga = global_lora[m]
            b[:, outside] = gb[:, outside].to(b.device)
            a[outside, :] = ga[outside, :].to(a.device)


def structured_upload(
    kind: str, delta: Factors, components: dict[str, torch.Tensor] | None, value_bits: int
) -> Compressed:
    """The update of the entries the scheme trained, as payloads over [vec(B); vec(A)].

    fslora and hetlora send k_i (d + k) values per module; fslora adds ceil(log2 r) bits per
    component index (hetlora's first-k pattern needs none). ffa sends all of B, d r values.
    Nothing is dropped from what was trained, so the distortion is 0."""
    payload: dict[str, ModulePayload] = {}
    kept = bits = 0
    for m, (ub, ua) in delta.items():
        d, r = ub.shape
        k = ua.shape[1]
        if kind == "ffa":
            idx = torch.arange(d * r)
            index_bits = 0
        else:
            assert components is not None
            comps = components[m]
            idx = torch.sort(rank_component_positions(d, r, k)[comps].reshape(-1)).values
            index_bits = comps.numel() * math.ceil(math.log2(r)) if kind == "fslora" and r > 1 else 0
        payload[m] = ModulePayload(idx, flat(ub, ua)[idx].clone())
        kept += idx.numel()
        bits += idx.numel() * value_bits + index_bits
    return Compressed(payload, kept, bits, 0.0)
