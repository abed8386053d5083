"""FedAvg of separate LoRA factors with an uplink compressor [paper II-B, III; docs/algorithms.md §1-3].

Every client trains the full rank r. Its local change plus its error memory is the update U;
``compression.method`` picks what of U travels (SOFT, a baseline, or all of it), and with
``compression.error_feedback`` the rest stays in the client's memory for next time [paper
(10)-(14)]. SOFT adds its orthogonal regulariser to the local loss [paper eq. (7)].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from fedlora_ray.algorithm.schemes import rules
from fedlora_ray.algorithm.schemes.base import LocalUpdate, Scheme
from fedlora_ray.compress.base import Compressed
from fedlora_ray.compress.error_feedback import compensate, residual
from fedlora_ray.compress.registry import compressor
from fedlora_ray.config import RunConfig

_COMPRESSOR_STREAM = 0x5EED  # the random baselines draw from their own stream of the round seed


class FedAvg(Scheme):
    name = "fedavg"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        comp = cfg.compression
        self.compressor = compressor(comp.method)
        # the error memory e_i: what a sparsifier did not send, carried to the client's next round
        self.remembers_error = comp.error_feedback and not self.compressor.dense

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        """Any compressor goes."""
        rules.any_compressor(cfg)

    def module_upload(
        self, d: int, k: int, r: int, components: int, keep_ratio: float, value_bits: int
    ) -> tuple[int, int]:
        return self.compressor.module_upload(d, k, r, components, keep_ratio, value_bits)

    @property
    def orthogonal_weight(self) -> float:
        return self.cfg.compression.lambda_o if self.compressor.orthogonal else 0.0

    def upload(self, update: LocalUpdate) -> tuple[Compressed, dict[str, Any]]:
        comp = self.cfg.compression
        memory = update.state.get("error") if self.remembers_error else None
        compensated = compensate(update.delta, memory)
        gen = torch.Generator().manual_seed(update.seed ^ _COMPRESSOR_STREAM)
        ratio = update.keep_ratio
        round_cfg = comp if ratio is None else dataclasses.replace(comp, keep_ratio=ratio)
        sent = self.compressor.compress(compensated, update.local, round_cfg, gen)
        return sent, ({"error": residual(compensated, sent)} if self.remembers_error else {})
