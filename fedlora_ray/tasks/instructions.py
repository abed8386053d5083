"""Instruction datasets for causal language models (modality "instructions", which only
``model.name: causal_lm`` takes) [docs/algorithms.md §13]:

- ``data.dataset: instructions``: ``data.source`` (local JSON/JSONL, Alpaca or chat form, or a
  Hugging Face dataset id), labelled by ``data.category_column`` for the partition;
- ``data.dataset: wordnet_define``: "Define the word X." -> the WordNet gloss, labelled by
  lexicographer category, with a held-out multiple-choice test (the offline default).

The readers are ``fedlora_ray.data.instructions`` (plain Python: the driver reads labels only;
client actors tokenise)."""

from __future__ import annotations

from fedlora_ray.config import ConfigError, DataConfig, RunConfig
from fedlora_ray.data.instructions import InstructionSet, column_map, load_instructions, load_wordnet_define
from fedlora_ray.data.wordnet import validate_config as validate_wordnet
from fedlora_ray.tasks.base import Split, register_dataset

MODALITY = "instructions"


def _split(s: InstructionSet) -> Split:
    return Split(s.labels, s.label_names, s)


def validate_instructions(cfg: RunConfig) -> None:
    """The source is named, the column mapping reads 'field=column', and the natural partition
    has a column to split by (without data.category_column every example has one label, so
    'shards' cuts the file's order and 'dirichlet' skews only the clients' sizes)."""
    data = cfg.data
    if not data.source:
        raise ConfigError(
            "config field 'data.source' = '': data.dataset = 'instructions' needs a local .json or .jsonl "
            "file, or a Hugging Face dataset id"
        )
    column_map(data)
    if data.partition == "natural" and not data.category_column:
        raise ConfigError(
            "config field 'data.partition' = 'natural': gives one client per value of "
            "data.category_column, which is empty; name the column (a user id, a source), or use 'iid'"
        )


def _more_instructions(data: DataConfig) -> str:
    return "data.source (more rows), data.test_fraction"


@register_dataset("instructions", MODALITY, validate=validate_instructions, more_examples=_more_instructions)
def instruction_splits(cfg: DataConfig) -> tuple[Split, Split]:
    train, test = load_instructions(cfg)
    return _split(train), _split(test)


def validate_define(cfg: RunConfig) -> None:
    """WordNet's own rules (categories, the test split, data.noun), and enough held-out words
    for a question's choices."""
    validate_wordnet(cfg)
    data = cfg.data
    held = data.test_per_class * data.num_categories
    if data.mc_choices > held:
        raise ConfigError(
            f"config field 'data.mc_choices' = {data.mc_choices}: must be <= the {held} held-out words "
            "(data.test_per_class x data.num_categories) it draws the choices from"
        )


def _more_words(data: DataConfig) -> str:
    return "data.per_class_cap, data.num_categories"


@register_dataset("wordnet_define", MODALITY, validate=validate_define, more_examples=_more_words)
def wordnet_define_splits(cfg: DataConfig) -> tuple[Split, Split]:
    train, test = load_wordnet_define(cfg)
    return _split(train), _split(test)
