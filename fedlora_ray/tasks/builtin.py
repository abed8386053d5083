"""Registers the built-in tasks: importing this module fills ``DATASETS`` and ``MODELS``."""

from fedlora_ray.tasks import ag_news, bert, cifar100, distilbert, fashion_mnist, vit, wordnet  # noqa: F401
