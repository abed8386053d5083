"""The built-in schemes' registry entries: fedavg, fslora, hetlora and ffa [docs/algorithms.md
§1, §6].

Each entry is the scheme's rules (``rules``, no torch) and a function that imports its class,
so that checking a config loads no torch; the class is imported when a run builds the scheme.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedlora_ray.algorithm.schemes import rules
from fedlora_ray.algorithm.schemes.registry import SCHEMES, SchemeSpec

if TYPE_CHECKING:
    from fedlora_ray.algorithm.schemes.base import Scheme


def _fedavg() -> type[Scheme]:
    from fedlora_ray.algorithm.schemes.fedavg import FedAvg

    return FedAvg


def _fslora() -> type[Scheme]:
    from fedlora_ray.algorithm.schemes.fslora import FSLoRA

    return FSLoRA


def _hetlora() -> type[Scheme]:
    from fedlora_ray.algorithm.schemes.hetlora import HetLoRA

    return HetLoRA


def _ffa() -> type[Scheme]:
    from fedlora_ray.algorithm.schemes.ffa import FFA

    return FFA


SCHEMES.update(
    fedavg=SchemeSpec(rules.any_compressor, _fedavg),
    ffa=SchemeSpec(rules.sends_its_own_update, _ffa),
    fslora=SchemeSpec(rules.draws_client_ratios, _fslora),
    hetlora=SchemeSpec(rules.draws_client_ratios, _hetlora),
)
