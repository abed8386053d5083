"""Wireless federated LoRA fine-tuning: the science package (no Ray here; see actors/)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

if importlib.util.find_spec("torchvision") is not None:
    # A torchvision wheel that does not match the installed torch breaks every later
    # `import transformers` / `import peft`; the guard makes that import work (timm_import.py).
    from fedlora_ray.timm_import import guard_torchvision_import

    guard_torchvision_import()

if TYPE_CHECKING:
    from fedlora_ray.classifier import Classifier, load_classifier

__all__ = ["Classifier", "load_classifier"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import fedlora_ray.config` (the CLI, Ray's driver) does not pull in torch.
    if name in __all__:
        from fedlora_ray import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'fedlora_ray' has no attribute {name!r}")
