"""FSLoRA: federated sketching LoRA [FSLoRA, arXiv 2501.19389; docs/algorithms.md §6].

Client i trains a sketch of k_i of the r rank components: each round, per module, one index set
I drawn uniformly without replacement, shared by B's columns and A's rows; the forward is
W0 + B S A with S = (r / k_i) diag(1_I), so E[S] = I. Only B[:, I] and A[I, :] change, and only
they travel. The server step is the plain weighted average of the sketched entries (or server
Adam, ``algorithm.server_optimizer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fedlora_ray.algorithm.schemes.base import LocalUpdate, RatioScheme
from fedlora_ray.algorithm.schemes.structured import component_upload
from fedlora_ray.compress.base import Compressed
from fedlora_ray.compress.bits import sketch_upload

_SKETCH_STREAM = 0x5CE7C4  # the sketch draws from its own stream of the client's round seed


def sketch_components(seed: int, modules: Sequence[str], rank: int, k: int) -> dict[str, torch.Tensor]:
    """k of r components per module, uniformly without replacement, sorted; one draw per module
    from the client's round seed (so the same on any process)."""
    gen = torch.Generator().manual_seed(seed ^ _SKETCH_STREAM)
    return {m: torch.sort(torch.randperm(rank, generator=gen)[:k]).values for m in modules}


class FSLoRA(RatioScheme):
    name = "fslora"
    module_upload = staticmethod(sketch_upload)  # type: ignore[assignment]

    def components(self, seed: int, modules: Sequence[str], k: int | None) -> dict[str, torch.Tensor] | None:
        return sketch_components(seed, modules, self.rank, self.rank if k is None else k)

    def component_scale(self, components: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m, idx in components.items():
            s = torch.zeros(self.rank)
            s[idx] = self.rank / idx.numel()
            out[m] = s
        return out

    def upload(self, update: LocalUpdate) -> tuple[Compressed, dict[str, Any]]:
        assert update.components is not None
        return component_upload(
            update.delta, update.components, self.cfg.compression.value_bits, indexed=True
        ), {}
