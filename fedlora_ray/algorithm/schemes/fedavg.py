"""FedAvg of separate LoRA factors with an uplink compressor [paper II-B, III; docs/algorithms.md §1-3].

Every client trains the full rank r. ``compression.target`` says what is sparsified: its local
change (``update``, ours) or its local factors (``factors``, the paper's literal reading), each
plus its error memory; ``compression.method`` picks what of it travels (SOFT, a baseline, or all
of it), and with error feedback the rest stays in the client's memory for next time [paper
(10)-(14)]. SOFT adds its orthogonal regulariser to the local loss [paper eq. (7)].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedlora_ray.algorithm.sampling import RoundWeights
from fedlora_ray.algorithm.schemes import rules
from fedlora_ray.algorithm.schemes.base import LocalUpdate, Scheme
from fedlora_ray.compress.base import Compressed, Compressor
from fedlora_ray.compress.error_feedback import compensate, residual
from fedlora_ray.compress.registry import compressor, upload_model
from fedlora_ray.config import CompressionConfig, RunConfig
from fedlora_ray.lora.adapter import Adapter

_COMPRESSOR_STREAM = 0x5EED  # the random baselines draw from their own stream of the round seed


def keeps_error_memory(comp: CompressionConfig, method: Compressor) -> bool:
    """Whether a client keeps the error memory e of §III-C: error feedback on, a sparsifier (a
    dense upload leaves nothing behind), and the method in ``compression.error_feedback_scope``:
    every method ('all', ours) or those the paper gives it ('soft_only': SOFT, to which §III-C
    adds error feedback; §V describes none for the baselines) [docs/algorithms.md §3]."""
    if not comp.error_feedback or method.dense:
        return False
    return comp.error_feedback_scope == "all" or method.paper_error_feedback


def scores_compressed(comp: CompressionConfig) -> bool:
    """Whether SOFT's per-rank scores come from U, the matrices it sparsifies (error memory
    included), rather than from the locally trained factors (``compression.soft_score``).
    'auto': from U with ``target = factors``, where eq. (10) applies the whole sparsifier, scores
    and selection, to B + E_B and A + E_A [paper: §III-C]; from the local factors with ``target =
    update``, as before [ours] (docs/algorithms.md §2)."""
    if comp.soft_score == "auto":
        return comp.target == "factors"
    return comp.soft_score == "compressed"


class FedAvg(Scheme):
    name = "fedavg"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        comp = cfg.compression
        self.compressor = compressor(comp.method)
        # the error memory e_i: what a sparsifier did not send, carried to the client's next round
        self.remembers_error = keeps_error_memory(comp, self.compressor)
        self.sends_factors = comp.target == "factors"
        self.scores_compressed = scores_compressed(comp)

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        """Any compressor goes."""
        rules.any_compressor(cfg)

    def module_upload(
        self, d: int, k: int, r: int, components: int, keep_ratio: float, value_bits: int
    ) -> tuple[int, int]:
        return upload_model(self.cfg.compression)(d, k, r, components, keep_ratio, value_bits)

    @property
    def orthogonal_weight(self) -> float:
        return self.cfg.compression.lambda_o if self.compressor.orthogonal else 0.0

    def upload(self, update: LocalUpdate) -> tuple[Compressed, dict[str, Any]]:
        """C(X + e) and the new memory X + e - C(X + e), with X the local change or, with
        ``target = factors``, the local factors [paper: §III-B, §III-C eqs. (10)-(12)]."""
        comp = self.cfg.compression
        memory = update.state.get("error") if self.remembers_error else None
        compensated = compensate(update.local if self.sends_factors else update.delta, memory)
        gen = torch.Generator().manual_seed(update.seed ^ _COMPRESSOR_STREAM)
        ratio = update.keep_ratio
        round_cfg = comp if ratio is None else dataclasses.replace(comp, keep_ratio=ratio)
        scored = compensated if self.scores_compressed else update.local
        sent = self.compressor.compress(compensated, scored, round_cfg, gen)
        if self.sends_factors:  # the server averages these values themselves, zero where unsent
            sent.payload = {m: dataclasses.replace(p, factors=True) for m, p in sent.payload.items()}
        return sent, ({"error": residual(compensated, sent)} if self.remembers_error else {})

    def aggregate(
        self, global_adapter: Adapter, uploads: Sequence[Adapter], weights: RoundWeights,
        components: np.ndarray,
    ) -> Adapter:  # fmt: skip
        """With ``target = factors``: the LoRA update is T (S - X), S = sum_i (w_i / T) C(U_i) the
        average of eq. (5) over the sent factors, zero where a client sent nothing, and T =
        ``weights.total`` (1 for uniform sampling) [paper: §II-B eq. (5), §III-B; docs/algorithms.md
        §2]. Written so, with server_lr = 1 and sgd, an entry no client sent becomes exactly 0:
        X + (0 - X) is 0 in floating point, whereas X + sum_i w_i (0 - X) leaves X's rounding
        residue (about 1e-10 of it). The head is averaged as in update mode."""
        if not self.sends_factors:
            return super().aggregate(global_adapter, uploads, weights, components)
        dense = super().aggregate(global_adapter, uploads, weights, components)  # for the head
        total = float(weights.total)
        share = [float(w) / total for w in weights.values]

        def mean(tensors: list[torch.Tensor]) -> torch.Tensor:
            return sum((w * t for w, t in zip(share, tensors)), torch.zeros_like(tensors[0]))

        lora = {
            m: (
                total * (mean([u.lora[m][0] for u in uploads]) - b),
                total * (mean([u.lora[m][1] for u in uploads]) - a),
            )
            for m, (b, a) in global_adapter.lora.items()
        }
        return Adapter(lora, dense.head)
