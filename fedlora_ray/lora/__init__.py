"""Inject LoRA with peft; move the trainable state (LoRA factors + head) as plain tensors.

The names below are imported when first used: ``fedlora_ray.lora.adapter`` (what the driver,
the server step and the config checks need) then loads without peft and transformers, which
take seconds to import and only a process that builds a model needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedlora_ray.lora.adapter import Adapter, get_adapter, set_adapter

if TYPE_CHECKING:
    from fedlora_ray.lora.model import TextClassifier, build_model, load_tokenizer
    from fedlora_ray.lora.save import save_adapter

__all__ = [
    "Adapter", "TextClassifier", "build_model", "get_adapter", "load_tokenizer",
    "save_adapter", "set_adapter",
]  # fmt: skip
_LAZY = {"TextClassifier": "model", "build_model": "model", "load_tokenizer": "model", "save_adapter": "save"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"fedlora_ray.lora.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fedlora_ray.lora' has no attribute {name!r}")
