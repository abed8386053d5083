"""HetLoRA: heterogeneous ranks by truncation [HetLoRA, as summarised in docs/algorithms.md §6].

Client i trains the first r_i components, B[:, :r_i] and A[:r_i, :], unscaled, and sends them.
The server zero-pads each upload to rank r and averages the padded factors per module with
weights proportional to ||B_i A_i||_F (the data-and-sampling weights stand in while every
product is zero), and the head with the round's weights.

With independent sampling the round's weights are p_i / q_i: a client seldom sampled speaks for
more of the population, so its norm weight is scaled by 1 / q_i, and the server moves toward
the average by sum_i p_i / q_i, whose expectation is 1 [docs/algorithms.md §6-7, ours].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedlora_ray.algorithm.aggregate import aggregate_update, hetlora_target, zero_pad
from fedlora_ray.algorithm.sampling import RoundWeights
from fedlora_ray.algorithm.schemes.base import LocalUpdate, RatioScheme
from fedlora_ray.algorithm.schemes.structured import component_upload
from fedlora_ray.compress.base import Compressed
from fedlora_ray.compress.bits import prefix_upload
from fedlora_ray.lora.adapter import Adapter


class HetLoRA(RatioScheme):
    name = "hetlora"
    module_upload = staticmethod(prefix_upload)  # type: ignore[assignment]

    def components(self, seed: int, modules: Sequence[str], k: int | None) -> dict[str, torch.Tensor] | None:
        return {m: torch.arange(self.rank if k is None else k) for m in modules}

    def upload(self, update: LocalUpdate) -> tuple[Compressed, dict[str, Any]]:
        assert update.components is not None
        return component_upload(
            update.delta, update.components, self.cfg.compression.value_bits, indexed=False
        ), {}

    def held(self, upload: Adapter, components: int) -> Adapter:
        """The server pads the truncated factors with zeros: B[:, r_i:] and A[r_i:, :] are 0."""
        return zero_pad(upload, components)

    def aggregate(
        self, global_adapter: Adapter, uploads: Sequence[Adapter], weights: RoundWeights,
        components: np.ndarray,
    ) -> Adapter:  # fmt: skip
        if weights.inclusion is None:  # equal inclusion probabilities: data shares alone
            target = hetlora_target(uploads, weights.share.tolist())
        else:
            target = hetlora_target(uploads, (weights.share / weights.inclusion).tolist(),
                                    norm_scale=(1.0 / weights.inclusion).tolist())  # fmt: skip
        return aggregate_update(global_adapter, [target], [weights.total])
