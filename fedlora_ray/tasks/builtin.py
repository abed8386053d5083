"""Registers the built-in tasks: importing this module fills ``DATASETS`` and ``MODELS``."""

from fedlora_ray.tasks import (  # noqa: F401
    ag_news,
    bert,
    cifar100,
    distilbert,
    efficientnet,
    fashion_mnist,
    vit,
    wordnet,
)  # fmt: skip
