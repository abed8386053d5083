"""Inject LoRA with peft; move the trainable state (LoRA factors + head) as plain tensors."""

from fedlora_ray.lora.adapter import Adapter, get_adapter, set_adapter
from fedlora_ray.lora.model import TextClassifier, build_model, load_tokenizer
from fedlora_ray.lora.save import save_adapter

__all__ = [
    "Adapter", "TextClassifier", "build_model", "get_adapter", "load_tokenizer",
    "save_adapter", "set_adapter",
]  # fmt: skip
