"""FFA-LoRA: A frozen at its seeded init on every client; only B trains and travels [FFA-LoRA,
as summarised in docs/algorithms.md §6]."""

from __future__ import annotations

from typing import Any

import torch

from fedlora_ray.algorithm.schemes.base import LocalUpdate, Scheme
from fedlora_ray.compress.base import Compressed, ModulePayload
from fedlora_ray.compress.bits import b_only_upload, payload_bits


class FFA(Scheme):
    name = "ffa"
    module_upload = staticmethod(b_only_upload)  # type: ignore[assignment]
    trains_a = False

    def upload(self, update: LocalUpdate) -> tuple[Compressed, dict[str, Any]]:
        """All of B's update, d r values with no positions (it is B's block of [vec(B); vec(A)])."""
        value_bits = self.cfg.compression.value_bits
        payload: dict[str, ModulePayload] = {}
        kept = bits = 0
        for m, (ub, _ua) in update.delta.items():
            idx = torch.arange(ub.numel())
            payload[m] = ModulePayload(idx, ub.reshape(-1).clone())
            kept += idx.numel()
            bits += payload_bits(idx.numel(), idx.numel(), value_bits, dense=True)
        return Compressed(payload, kept, bits, 0.0), {}
