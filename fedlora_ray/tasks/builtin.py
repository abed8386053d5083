"""The built-in tasks, registered when ``fedlora_ray.tasks`` is imported.

The dataset loaders are light (they read files with numpy) and register themselves with
``register_dataset``; importing their modules here fills ``DATASETS``. The model families
import torch and a model library (transformers, timm), so ``MODELS`` gets a light entry per
name, its modality and a function that imports the family's module on first use: checking a
config never loads them.
"""

from __future__ import annotations

import functools

from fedlora_ray.config import RunConfig
from fedlora_ray.tasks import ag_news, cifar100, fashion_mnist, instructions, wordnet  # noqa: F401  (register themselves)
from fedlora_ray.tasks.base import MODELS, ModelFamily, ModelSpec


@functools.cache  # one family object per process, as when the family modules registered instances
def _bert(pretrained: bool) -> ModelFamily:
    from fedlora_ray.tasks.bert import BertFamily

    return BertFamily(pretrained=pretrained)


@functools.cache
def _distilbert(tiny: bool) -> ModelFamily:
    from fedlora_ray.tasks.distilbert import DistilBertFamily

    return DistilBertFamily(tiny=tiny)


@functools.cache
def _vit(tiny: bool) -> ModelFamily:
    from fedlora_ray.tasks.vit import VIT_B16, VitFamily

    return VitFamily(VIT_B16, tiny=tiny)


@functools.cache
def _efficientnet(tiny: bool) -> ModelFamily:
    from fedlora_ray.tasks.efficientnet import EfficientNetFamily

    return EfficientNetFamily(tiny=tiny)


@functools.cache
def _causal_lm(tiny: bool) -> ModelFamily:
    from fedlora_ray.tasks.causal_lm import CausalLMFamily

    return CausalLMFamily(tiny=tiny)


def _causal_lm_rules(cfg: RunConfig) -> None:
    from fedlora_ray.tasks.causal_lm_rules import validate

    validate(cfg)


MODELS.update(
    minilm=ModelSpec("text", functools.partial(_bert, True)),  # all-MiniLM-L6-v2, from its PyPI package
    tiny=ModelSpec("text", functools.partial(_bert, False)),  # a random 2-layer BERT for tests
    distilbert=ModelSpec("text", functools.partial(_distilbert, False)),
    distilbert_tiny=ModelSpec("text", functools.partial(_distilbert, True)),
    efficientnet_lite0=ModelSpec("image", functools.partial(_efficientnet, False)),
    efficientnet_tiny=ModelSpec("image", functools.partial(_efficientnet, True)),
    vit_b16=ModelSpec("image", functools.partial(_vit, False)),
    vit_tiny=ModelSpec("image", functools.partial(_vit, True)),
    # any AutoModelForCausalLM (SmolLM2-135M-Instruct from its PyPI package by default), and a
    # random Llama / Qwen2 / Mistral / Gemma / GPT-2 for tests, on instruction data
    causal_lm=ModelSpec("instructions", functools.partial(_causal_lm, False), _causal_lm_rules),
    causal_lm_tiny=ModelSpec("instructions", functools.partial(_causal_lm, True), _causal_lm_rules),
)
