"""Topic classification from WordNet 3.0 noun glosses (the embedded real default).

Text: a noun synset's gloss with its quoted usage examples removed. Label: the synset's
lexicographer category (noun.animal, noun.food, ...). Source: Debian's ``wordnet-base``
(``/usr/share/wordnet/data.noun``), format documented in wndb(5WN). The dataset is ours.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from fedlora_ray.config import ConfigError, DataConfig, RunConfig
from fedlora_ray.data.text import TextDataset

T = TypeVar("T")

WORDNET_NOUN_CATEGORIES = (
    "Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication",
    "event", "feeling", "food", "group", "location", "motive", "object", "person",
    "phenomenon", "plant", "possession", "process", "quantity", "relation", "shape", "state",
    "substance", "time",
)  # fmt: skip

# lex_filenum 03 is noun.Tops, 04 noun.act, ... 28 noun.time (lexnames(5WN)).
_FIRST_NOUN_LEXFILE = 3
_QUOTED = re.compile(r'"[^"]*"')


def validate_config(cfg: RunConfig) -> None:
    """WordNet's own rules on the data section, checked for every config that names
    ``data.dataset: wordnet`` (the task's validate hook): the categories exist and are distinct,
    enough of them are given, training data remains after the test split, and data.noun is
    where ``data.wordnet_dir`` says."""
    data = cfg.data
    for i, cat in enumerate(data.categories):
        if cat not in WORDNET_NOUN_CATEGORIES:
            raise ConfigError(
                f"config field 'data.categories[{i}]' = {cat!r}: allowed values are the WordNet "
                f"noun categories {', '.join(WORDNET_NOUN_CATEGORIES)}"
            )
    if data.num_categories > len(data.categories):
        raise ConfigError(
            f"config field 'data.num_categories' = {data.num_categories}: must be <= the "
            f"{len(data.categories)} entries of data.categories"
        )
    if len(set(data.categories)) != len(data.categories):
        raise ConfigError(f"config field 'data.categories' = {list(data.categories)}: repeats a name")
    if data.test_per_class >= data.per_class_cap:
        raise ConfigError(
            f"config field 'data.test_per_class' = {data.test_per_class}: must be < "
            f"data.per_class_cap ({data.per_class_cap}) so that training data remains"
        )
    if not (Path(data.wordnet_dir) / "data.noun").is_file():
        raise ConfigError(
            f"config field 'data.wordnet_dir' = {data.wordnet_dir!r}: no data.noun there "
            "(install Debian's wordnet-base, or point this at a WordNet 3.0 dict folder)"
        )


def clean_gloss(gloss: str) -> str:
    """Drop quoted usage examples and the separators they leave behind. A few WordNet glosses
    have an unpaired quote; the ';'-separated part holding it is an example and goes too."""
    text = _QUOTED.sub("", gloss)
    if '"' in text:
        text = ";".join(part for part in text.split(";") if '"' not in part)
    parts = [p.strip() for p in text.split(";")]
    return re.sub(r"\s+", " ", "; ".join(p for p in parts if p)).strip(" ;:,")


@functools.lru_cache(maxsize=4)
def read_noun_glosses(wordnet_dir: str | Path) -> dict[str, list[tuple[int, str]]]:
    """Map each noun category name to its (synset offset, cleaned gloss) pairs, file order.
    Parsed once per process (about 2 s): the driver, the trainer and every run of a sweep in
    one process share it; callers must not modify it."""
    by_category: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with open(Path(wordnet_dir) / "data.noun", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            category = WORDNET_NOUN_CATEGORIES[int(fields[1]) - _FIRST_NOUN_LEXFILE]
            text = clean_gloss(gloss)
            if text:
                by_category[category].append((int(fields[0]), text))
    return by_category


def split_by_category(
    by_category: Mapping[str, Sequence[T]], names: Sequence[str], cfg: DataConfig, noun: str
) -> tuple[list[tuple[T, int]], list[tuple[T, int]]]:
    """(train, test) lists of (item, label): per category of ``names`` (label = its position),
    ``per_class_cap`` items drawn with ``split_seed``, the first ``test_per_class`` held out.
    ValueError, naming the ``noun`` counted, for a category that cannot hold its test share."""
    rng = np.random.default_rng(cfg.split_seed)
    train: list[tuple[T, int]] = []
    test: list[tuple[T, int]] = []
    for label, name in enumerate(names):
        items = by_category.get(name, [])
        if len(items) <= cfg.test_per_class:
            raise ValueError(
                f"category {name!r} has {len(items)} {noun}, not more than "
                f"data.test_per_class = {cfg.test_per_class}"
            )
        chosen = rng.permutation(len(items))[: cfg.per_class_cap]
        for rank, i in enumerate(chosen):
            (test if rank < cfg.test_per_class else train).append((items[i], label))
    return train, test


@functools.lru_cache(maxsize=8)
def load_wordnet(cfg: DataConfig) -> tuple[TextDataset, TextDataset]:
    """The (train, test) split: per category, ``per_class_cap`` synsets drawn with
    ``split_seed``, the first ``test_per_class`` of them held out. Independent of the run seed,
    so every run on the same data config tests on the same examples."""
    names = tuple(cfg.categories[: cfg.num_categories])
    train, test = split_by_category(read_noun_glosses(cfg.wordnet_dir), names, cfg, "glosses")
    train_x, test_x = [item[1] for item, _ in train], [item[1] for item, _ in test]
    train_labels = np.asarray([y for _, y in train], dtype=np.int64)
    test_labels = np.asarray([y for _, y in test], dtype=np.int64)
    for labels in (train_labels, test_labels):
        labels.setflags(write=False)  # cached and shared: nobody may change it
    return (
        TextDataset(tuple(train_x), train_labels, names),
        TextDataset(tuple(test_x), test_labels, names),
    )
