"""``model.name: minilm | tiny``: BERT-family text encoders with peft LoRA, mean pooling and a
linear head (the builders live in ``fedlora_ray.lora.model``). Text is tokenised once per
actor, padded to ``model.max_length``; batches are trimmed to their longest example."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedlora_ray.config import ModelConfig
from fedlora_ray.tasks.base import Batches, ModelFamily, Split


def builders():  # type: ignore[no-untyped-def]
    """``fedlora_ray.lora.model``, imported when a model or tokenizer is needed: it loads peft and
    transformers (seconds), which the driver and the config checks never need."""
    from fedlora_ray.lora import model

    return model


def _longest(mask: torch.Tensor) -> int:
    """Tokens of the longest example of a batch's attention mask."""
    return int(mask.sum(1).max())


@dataclass(frozen=True)
class Tokenized:
    """A dataset tokenised once, padded to ``max_length``; batches are trimmed to their
    longest example, so short glosses cost little."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """((input ids, attention mask), labels), trimmed to the batch's longest example."""
        mask = self.attention_mask[idx]
        width = _longest(mask)
        inputs = (
            self.input_ids[idx, :width].to(device, non_blocking=True),
            mask[:, :width].to(device, non_blocking=True),
        )
        return inputs, self.labels[idx].to(device, non_blocking=True)

    def width(self, idx: torch.Tensor) -> int:
        """The batch's sequence width: its longest example's tokens."""
        return _longest(self.attention_mask[idx])

    def eval_order(self) -> torch.Tensor:
        """Shortest examples first, so evaluation batches carry little padding."""
        return torch.argsort(self.attention_mask.sum(1), stable=True)


def tokenize(tokenizer, texts: tuple[str, ...], labels: np.ndarray, max_length: int) -> Tokenized:  # type: ignore[no-untyped-def]
    enc = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return Tokenized(enc["input_ids"], enc["attention_mask"], torch.tensor(labels, dtype=torch.long))


class BertFamily(ModelFamily):
    """``pretrained``: all-MiniLM-L6-v2's weights (``minilm``); otherwise a random BERT of
    ``model.tiny_hidden`` x ``model.tiny_layers`` for tests (``tiny``). Both read MiniLM's
    tokenizer."""

    modality = "text"

    def __init__(self, pretrained: bool) -> None:
        self.pretrained = pretrained

    def build(self, cfg: ModelConfig, num_labels: int, seed: int) -> nn.Module:
        return builders().build_model(cfg, num_labels, seed, pretrained=self.pretrained)

    def prepare(self, cfg: ModelConfig, split: Split, device: torch.device | None = None) -> Batches:
        return tokenize(builders().load_tokenizer(cfg), split.examples, split.labels, cfg.max_length)

    def linear_modules(self, cfg: ModelConfig) -> dict[str, tuple[int, int]]:
        return builders().linear_modules(cfg, pretrained=self.pretrained)

    def hub_id(self, cfg: ModelConfig) -> str:
        return builders().base_model_id(cfg, pretrained=self.pretrained)
