"""The trainable state that travels: LoRA factors per module and the classification head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LORA_B = ".lora_B.default.weight"
LORA_A = ".lora_A.default.weight"
PEFT_PREFIX = "encoder.base_model.model."


@dataclass
class Adapter:
    """``lora[module] = (B, A)`` with B of shape (d, r) and A of shape (r, k); ``head`` holds
    the head's weight and bias (empty when the head is frozen). CPU tensors, float32."""

    lora: dict[str, tuple[torch.Tensor, torch.Tensor]]
    head: dict[str, torch.Tensor]

    def num_entries(self) -> int:
        lora = sum(b.numel() + a.numel() for b, a in self.lora.values())
        return lora + sum(t.numel() for t in self.head.values())

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor, in a fixed order: (B, A) per module, then the head's."""
        return [t for pair in self.lora.values() for t in pair] + list(self.head.values())

    def with_tensors(self, flat: list[torch.Tensor]) -> Adapter:
        """An adapter of this one's modules and head holding ``flat``, in ``tensors()``'s order."""
        it = iter(flat)
        return Adapter({m: (next(it), next(it)) for m in self.lora}, {k: next(it) for k in self.head})

    def clone(self) -> Adapter:
        return Adapter(
            {m: (b.clone(), a.clone()) for m, (b, a) in self.lora.items()},
            {k: v.clone() for k, v in self.head.items()},
        )


def lora_parameters(model: nn.Module) -> dict[str, tuple[nn.Parameter, nn.Parameter]]:
    """module name (as in the base model, e.g. ``encoder.layer.0.attention.self.query``)
    -> the (B, A) parameters peft injected there, in the model's module order."""
    params = dict(model.named_parameters())
    out: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
    for name, p in params.items():
        if name.endswith(LORA_B):
            module = name[: -len(LORA_B)]
            out[module.removeprefix(PEFT_PREFIX)] = (p, params[module + LORA_A])
    return out


def _head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.head.named_parameters() if p.requires_grad}  # type: ignore[union-attr]


def get_adapter(model: nn.Module) -> Adapter:
    """Copy the model's trainable state out as CPU tensors; a 1x1 convolution's factors
    (d x r x 1 x 1, r x k x 1 x 1) come out as the matrices they are (d x r, r x k)."""
    lora = {
        m: (b.detach().flatten(1).to("cpu", copy=True), a.detach().flatten(1).to("cpu", copy=True))
        for m, (b, a) in lora_parameters(model).items()
    }
    head = {n: p.detach().to("cpu", copy=True) for n, p in _head_parameters(model).items()}
    return Adapter(lora, head)


@torch.no_grad()
def set_adapter(model: nn.Module, adapter: Adapter) -> None:
    """Load ``adapter`` into the model in place (shapes must match)."""
    params = lora_parameters(model)
    if params.keys() != adapter.lora.keys():
        raise ValueError("adapter modules do not match the model's LoRA modules")
    for m, (b, a) in params.items():
        b.copy_(adapter.lora[m][0].reshape(b.shape))
        a.copy_(adapter.lora[m][1].reshape(a.shape))
    for n, p in _head_parameters(model).items():
        p.copy_(adapter.head[n])
