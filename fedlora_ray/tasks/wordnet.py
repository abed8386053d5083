"""``data.dataset: wordnet``: WordNet 3.0 noun glosses labelled by lexicographer category (the
embedded real text default; the reader is ``fedlora_ray.data.wordnet``)."""

from __future__ import annotations

from fedlora_ray.config import DataConfig
from fedlora_ray.data.wordnet import load_wordnet
from fedlora_ray.tasks.base import Split, register_dataset


@register_dataset("wordnet", "text")
def wordnet_splits(cfg: DataConfig) -> tuple[Split, Split]:
    train, test = load_wordnet(cfg)
    return (
        Split(train.labels, train.label_names, train.texts),
        Split(test.labels, test.label_names, test.texts),
    )
