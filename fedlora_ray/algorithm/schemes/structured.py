"""Uploads of whole rank components: what FSLoRA, HetLoRA and FFA-LoRA send."""

from __future__ import annotations

import torch

from fedlora_ray.compress.base import Compressed, ModulePayload, flat, rank_component_positions
from fedlora_ray.compress.bits import component_upload_bits

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


def component_upload(
    delta: Factors, components: dict[str, torch.Tensor], value_bits: int, indexed: bool
) -> Compressed:
    """The update of the trained components, B[:, I] and A[I, :] per module, as payloads over
    [vec(B); vec(A)]: k_i (d + k) values, plus ceil(log2 r) bits per component index when
    ``indexed`` (FSLoRA's random sketch; a first-k prefix needs none). Nothing trained is
    dropped, so the distortion is 0."""
    payload: dict[str, ModulePayload] = {}
    kept = bits = 0
    for m, (ub, ua) in delta.items():
        d, r = ub.shape
        k = ua.shape[1]
        comps = components[m]
        idx = torch.sort(rank_component_positions(d, r, k)[comps].reshape(-1)).values
        payload[m] = ModulePayload(idx, flat(ub, ua)[idx].clone())
        kept += idx.numel()
        bits += component_upload_bits(comps.numel(), r, d, k, value_bits, indexed)
    return Compressed(payload, kept, bits, 0.0)
