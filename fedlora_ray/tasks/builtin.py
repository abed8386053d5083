"""Registers the built-in tasks: importing this module fills ``DATASETS`` and ``MODELS``."""

from fedlora_ray.tasks import ag_news, bert, distilbert, fashion_mnist, wordnet  # noqa: F401
