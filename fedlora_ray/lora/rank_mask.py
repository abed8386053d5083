"""Train a subset of LoRA's rank components: W0 + B diag(s) A, with a per-module scale s.

peft computes lora_B(lora_A(x)); a forward pre-hook on lora_B multiplies the r-dimensional
intermediate A x by s. A component j with s_j = 0 drops out of the forward, so B[:, j] and A[j, :]
get exactly zero gradient. FSLoRA's sketch is s = (r / k) 1_I [FSLoRA; docs/algorithms.md §6];
HetLoRA's truncation is s = 1_{j < r_i}.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from fedlora_ray.lora.adapter import PEFT_PREFIX

_LORA_B_MODULE = ".lora_B.default"


def lora_b_modules(model: nn.Module) -> dict[str, nn.Module]:
    """module name (as ``lora_parameters`` names it) -> peft's lora_B layer there (a linear
    layer, or a 1x1 convolution)."""
    return {
        name[: -len(_LORA_B_MODULE)].removeprefix(PEFT_PREFIX): mod
        for name, mod in model.named_modules()
        if name.endswith(_LORA_B_MODULE)
    }


@contextmanager
def rank_mask(modules: dict[str, nn.Module], scale: dict[str, torch.Tensor]) -> Iterator[None]:
    """While inside, module m's LoRA path is B diag(scale[m]) A; modules not in ``scale`` are
    left as they are."""
    handles = []
    for m, s in scale.items():
        weight: torch.Tensor = modules[m].weight  # type: ignore[assignment]
        s_dev = s.to(device=weight.device, dtype=weight.dtype)
        if weight.dim() == 4:  # a 1x1 convolution's lora_B: its input is N x r x H x W
            s_dev = s_dev.view(-1, 1, 1)

        def scale_input(_mod: nn.Module, args: tuple[torch.Tensor, ...], s_dev: torch.Tensor = s_dev):
            return (args[0] * s_dev, *args[1:])

        handles.append(modules[m].register_forward_pre_hook(scale_input))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
