"""``data.dataset: wordnet``: WordNet 3.0 noun glosses labelled by lexicographer category (the
embedded real text default; the reader, and WordNet's own config rules, are
``fedlora_ray.data.wordnet``)."""

from __future__ import annotations

from fedlora_ray.config import DataConfig
from fedlora_ray.data.wordnet import load_wordnet, validate_config
from fedlora_ray.tasks.base import Split, register_dataset


def _more_examples(data: DataConfig) -> str:
    """More synsets per category, or more categories, give the run more training examples."""
    return "data.per_class_cap, data.num_categories"


@register_dataset("wordnet", "text", validate=validate_config, more_examples=_more_examples)
def wordnet_splits(cfg: DataConfig) -> tuple[Split, Split]:
    train, test = load_wordnet(cfg)
    return (
        Split(train.labels, train.label_names, train.texts),
        Split(test.labels, test.label_names, test.texts),
    )
