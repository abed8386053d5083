"""``model.name: distilbert | distilbert_tiny``: DistilBERT encoders with peft LoRA on the
attention's ``q_lin`` and ``v_lin``, masked mean pooling and a linear head (the
``TextClassifier`` of ``fedlora_ray.lora.model``); text is tokenised as for the BERT family.

- ``distilbert`` loads ``model.weights``: a local folder written by ``save_pretrained`` (model
  and tokenizer), or a hub id; empty means ``distilbert-base-uncased`` from the hub, which needs
  internet (offline, a failure to load is a ConfigError asking for a local folder). With
  ``model.allow_random_init`` and no weights it is a random DistilBERT of that size (benchmarks).
- ``distilbert_tiny`` is a random 2-layer DistilBERT (dim 32) for tests, on MiniLM's WordPiece
  tokenizer (the same uncased BERT vocabulary as DistilBERT's), so it needs no download.

``model.target_modules`` defaults to BERT's ``[query, value]``; for these families exactly that
default means DistilBERT's ``[q_lin, v_lin]`` (``lora_targets``); any other list is used as given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from fedlora_ray.config import ConfigError, ModelConfig
from fedlora_ray.tasks.base import Batches, ModelFamily, Split, error_reason
from fedlora_ray.tasks.bert import builders, tokenize

DEFAULT_HUB_ID = "distilbert-base-uncased"
BERT_DEFAULT_TARGETS = ("query", "value")  # model.target_modules' default (BERT's names)
DISTILBERT_TARGETS = ("q_lin", "v_lin")  # what that default means for DistilBERT
TINY_DIM, TINY_LAYERS, TINY_HEADS, TINY_FFN = 32, 2, 2, 64  # the test model

T = TypeVar("T")


def _is_local(weights: str) -> bool:
    """A path rather than a hub id: an existing folder, or written like a path."""
    return Path(weights).expanduser().is_dir() or weights.startswith(("/", "./", "../", "~"))


class DistilBertFamily(ModelFamily):
    """``tiny``: the random test model; otherwise pretrained weights from ``model.weights``."""

    modality = "text"

    def __init__(self, tiny: bool = False) -> None:
        self.tiny = tiny

    # --- names -------------------------------------------------------------------------------
    def lora_targets(self, cfg: ModelConfig) -> tuple[str, ...]:
        """``[q_lin, v_lin]`` for the default ``model.target_modules`` (BERT's ``[query,
        value]``, position for position), else ``model.target_modules`` as given."""
        given = tuple(cfg.target_modules)
        return DISTILBERT_TARGETS if given == BERT_DEFAULT_TARGETS else given

    def hub_id(self, cfg: ModelConfig) -> str:
        if self.tiny:
            return f"tiny-distilbert-d{TINY_DIM}-l{TINY_LAYERS}"
        if self._random(cfg):
            return f"{DEFAULT_HUB_ID}-random-init"
        return DEFAULT_HUB_ID if not cfg.weights or _is_local(cfg.weights) else cfg.weights

    # --- where the weights come from ---------------------------------------------------------
    def _random(self, cfg: ModelConfig) -> bool:
        return self.tiny or (not cfg.weights and cfg.allow_random_init)

    def _source(self, cfg: ModelConfig) -> str:
        """The folder or hub id ``from_pretrained`` reads."""
        weights = cfg.weights or DEFAULT_HUB_ID
        if _is_local(weights):
            folder = Path(weights).expanduser()
            if not folder.is_dir():
                raise ConfigError(
                    f"config field 'model.weights' = {cfg.weights!r}: no such folder; give a folder "
                    "holding a DistilBERT saved with save_pretrained (config.json, the weights and "
                    "the tokenizer files), or a hub id where the machine has internet"
                )
            return str(folder)
        return weights

    def _pretrained(self, cfg: ModelConfig, load: Callable[[str], T]) -> T:
        """``load(source)``, a failure (offline, no such repo, an incomplete folder) turned into
        a ConfigError on ``model.weights`` without the hub's traceback."""
        source = self._source(cfg)
        try:
            return load(source)
        except (OSError, ValueError) as err:
            reason = error_reason(err)
            if Path(source).is_dir():
                what = (
                    f"the folder {source!r} does not hold a DistilBERT saved with save_pretrained "
                    f"({reason}); it needs config.json, the weights and the tokenizer files"
                )
            else:
                what = (
                    f"could not load {source!r} from the Hugging Face hub ({reason}); offline "
                    "(HF_HUB_OFFLINE) or without internet, model.weights must be a local folder "
                    "holding a DistilBERT saved with save_pretrained (model and tokenizer)"
                )
            raise ConfigError(f"config field 'model.weights' = {cfg.weights!r}: {what}") from None

    def _check_type(self, cfg: ModelConfig, config: Any) -> None:
        kind = getattr(config, "model_type", None)
        if kind != "distilbert":
            raise ConfigError(
                f"config field 'model.weights' = {cfg.weights!r}: holds a {kind!r} model, not "
                f"DistilBERT (model.name = {cfg.name!r})"
            )

    def _random_config(self, cfg: ModelConfig) -> Any:
        """The random model's DistilBertConfig: the tiny shape, or distilbert-base-uncased's
        (DistilBertConfig's defaults); the vocabulary is the tokenizer's."""
        from transformers import DistilBertConfig

        vocab = int(builders().load_tokenizer(cfg).vocab_size)
        if self.tiny:
            return DistilBertConfig(
                vocab_size=vocab,
                dim=TINY_DIM,
                n_layers=TINY_LAYERS,
                n_heads=TINY_HEADS,
                hidden_dim=TINY_FFN,
                max_position_embeddings=max(cfg.max_length, 64),
            )
        return DistilBertConfig(vocab_size=vocab)

    # --- the model ---------------------------------------------------------------------------
    def load_tokenizer(self, cfg: ModelConfig):  # type: ignore[no-untyped-def]
        if self._random(cfg):
            return builders().load_tokenizer(cfg)  # MiniLM's: the same uncased WordPiece vocabulary
        builders().quiet_transformers()
        from transformers import AutoTokenizer

        return self._pretrained(cfg, AutoTokenizer.from_pretrained)

    def build_encoder(self, cfg: ModelConfig, seed: int) -> nn.Module:
        """The frozen base encoder; the random ones are a pure function of ``seed``."""
        builders().quiet_transformers()
        from transformers import AutoModel, DistilBertModel

        torch.manual_seed(seed)
        if self._random(cfg):
            return DistilBertModel(self._random_config(cfg))
        encoder: nn.Module = self._pretrained(cfg, AutoModel.from_pretrained)
        self._check_type(cfg, encoder.config)
        return encoder

    def build(self, cfg: ModelConfig, num_labels: int, seed: int) -> nn.Module:
        """As ``fedlora_ray.lora.model.build_model``, with LoRA on ``lora_targets(cfg)``."""
        encoder = self.build_encoder(cfg, seed)
        bert = builders()
        peft_encoder = bert.with_lora(encoder, cfg, self.lora_targets(cfg), seed)
        hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr,arg-type]
        return bert.frozen_but_adapter(bert.TextClassifier(peft_encoder, hidden, num_labels), cfg)

    def prepare(self, cfg: ModelConfig, split: Split, device: torch.device | None = None) -> Batches:
        return tokenize(self.load_tokenizer(cfg), split.examples, split.labels, cfg.max_length)

    def linear_modules(self, cfg: ModelConfig) -> dict[str, tuple[int, int]]:
        """Read from a weightless copy on the meta device (for a pretrained model, only its
        config.json is read)."""
        builders().quiet_transformers()
        from transformers import AutoConfig, AutoModel, DistilBertModel

        if self._random(cfg):
            config = self._random_config(cfg)
            with torch.device("meta"):
                encoder: nn.Module = DistilBertModel(config)
        else:
            config = self._pretrained(cfg, AutoConfig.from_pretrained)
            self._check_type(cfg, config)
            with torch.device("meta"):
                encoder = AutoModel.from_config(config)
        return {
            name: (m.out_features, m.in_features)
            for name, m in encoder.named_modules()
            if isinstance(m, nn.Linear)
        }
