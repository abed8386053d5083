"""What a task is: a dataset loader and a model family, each looked up by name.

- A dataset loader (``data.dataset``) returns the train and test ``Split``: labels and label
  names, which the driver's partitioner needs, and the raw examples, which only the client
  actors prepare.
- A model family (``model.name``) builds the frozen base with LoRA and a head, prepares a split
  once per actor (tokenises text, keeps images as uint8) into ``Batches`` that cut and move a
  batch to the device, and names its LoRA modules and its base model.
The round and the client trainer see only these interfaces. A new task is one module that
calls ``register_dataset`` and/or ``register_model``.

``DATASETS`` and ``MODELS`` hold light entries (``DatasetSpec``, ``ModelSpec``): the modality, the
task's own config rules, and how to get the loader or the family. This module imports neither
torch nor a model library, so that a config is checked before anything heavy loads; a built-in
family's module (torch, transformers, timm) is imported when the family is first asked for
(``fedlora_ray.tasks.builtin``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from fedlora_ray.config import DataConfig, ModelConfig, RunConfig

if TYPE_CHECKING:  # annotations only: the interfaces below are read without torch
    import torch
    from torch import nn


@dataclass(frozen=True)
class Split:
    """One split of a dataset. ``labels`` are read-only integers, ``label_names[y]`` names label
    ``y``; ``examples`` are what the model family prepares (texts, or images). ``source`` holds
    the examples, or a function that reads them when first asked: the driver partitions by
    labels alone, so an image dataset's pixels are read only where a model is fed."""

    labels: np.ndarray
    label_names: tuple[str, ...]
    source: Any

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def examples(self) -> Any:
        return self.source() if callable(self.source) else self.source


class Batches(Protocol):
    """A split prepared for one model: batches cut by example index and moved to a device.

    A text split that pads each batch to its longest example also has ``width(idx) -> int``,
    the sequence width of the batch ``idx``: training several clients in one pass
    (``runtime.clients_per_pass``) reads it to give each client its own dropout masks."""

    def __len__(self) -> int: ...

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(the model's inputs, the labels) of the examples ``idx``."""
        ...

    def eval_order(self) -> torch.Tensor:
        """All example indices in the order evaluation cuts its batches (e.g. by length)."""
        ...


class ModelFamily:
    """How one family of base models is built, fed and named."""

    modality: ClassVar[str] = ""  # the kind of examples it takes: "text" or "image"
    targets_field: ClassVar[str] = "model.target_modules"  # the config field ``lora_targets`` reads

    def build(self, cfg: ModelConfig, num_labels: int, seed: int) -> nn.Module:
        """The frozen base with LoRA on ``cfg.target_modules`` and a head; seeded, so every
        process that builds it from the same (cfg, seed) holds the same initial adapter."""
        raise NotImplementedError

    def prepare(self, cfg: ModelConfig, split: Split, device: torch.device | None = None) -> Batches:
        """``split`` ready to cut into batches, once per actor; ``device`` is where the actor
        trains, for families that compute something once over the whole split."""
        raise NotImplementedError

    def lora_targets(self, cfg: ModelConfig) -> tuple[str, ...]:
        """The module names LoRA goes on, matched as peft matches a list (a full name, or its
        end after a dot). Default: ``model.target_modules``."""
        return tuple(cfg.target_modules)

    def linear_modules(self, cfg: ModelConfig) -> dict[str, tuple[int, int]]:
        """Every linear module of the base model: full name -> (out, in) features, read without
        loading weights."""
        raise NotImplementedError

    def conv_modules(self, cfg: ModelConfig) -> frozenset[str]:
        """The LoRA modules that are 1x1 convolutions: peft stores their factors as d x r x 1 x 1
        and r x k x 1 x 1 tensors, which an ``Adapter`` holds as d x r and r x k matrices."""
        return frozenset()

    def hub_id(self, cfg: ModelConfig) -> str:
        """What ``adapter_config.json`` records as the base model."""
        raise NotImplementedError

    def fan_in_fan_out(self, cfg: ModelConfig) -> bool:
        """The LoRA targets store their weight as (in, out) (GPT-2's Conv1D): peft's
        ``fan_in_fan_out``, recorded in ``adapter_config.json``."""
        return False


def cap_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices keeping at most ``per_class`` examples of each class (all when 0), drawn with
    ``seed``, in ascending order: ``data.train_per_class`` and ``data.test_per_class`` for the
    datasets with fixed splits."""
    if per_class <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def error_reason(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type when empty), cut to ``limit``
    characters: what a ConfigError quotes of a loader's failure, without its traceback."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


DatasetLoader = Callable[[DataConfig], tuple[Split, Split]]
ConfigRules = Callable[[RunConfig], None]  # raises ConfigError naming the field, value and what is allowed


def _fixed_split_fields(data: DataConfig) -> str:
    """The datasets with fixed splits cap each class with data.train_per_class."""
    return "data.train_per_class; 0 takes all" if data.train_per_class > 0 else ""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as its registry holds it. ``validate`` is the dataset's own rules on the config
    (None: none); ``more_examples`` names the fields that give the run more training examples,
    for the message that refuses a partition the data cannot serve."""

    modality: str  # the kind of examples: "text" or "image" (a model family must take the same)
    load: DatasetLoader
    validate: ConfigRules | None = None
    more_examples: Callable[[DataConfig], str] = _fixed_split_fields


@dataclass(frozen=True)
class ModelSpec:
    """A model family as its registry holds it: its modality and its own config rules (None:
    none), read without importing the family; ``family`` returns the family, importing its
    module on the first call."""

    modality: str
    family: Callable[[], ModelFamily]
    validate: ConfigRules | None = None


DATASETS: dict[str, DatasetSpec] = {}
MODELS: dict[str, ModelSpec] = {}


def register_dataset(
    name: str,
    modality: str,
    *,
    validate: ConfigRules | None = None,
    more_examples: Callable[[DataConfig], str] | None = None,
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: make ``data.dataset: name`` load with the decorated function. ``validate``
    checks the dataset's own fields on every config that names it."""

    def add(loader: DatasetLoader) -> DatasetLoader:
        extra = {} if more_examples is None else {"more_examples": more_examples}
        DATASETS[name] = DatasetSpec(modality, loader, validate, **extra)
        return loader

    return add


def register_model(name: str, family: ModelFamily, *, validate: ConfigRules | None = None) -> ModelFamily:
    """Make ``model.name: name`` build with ``family``; ``validate`` checks the family's own
    fields on every config that names it."""
    MODELS[name] = ModelSpec(family.modality, lambda: family, validate)
    return family


def dataset_modality(name: str) -> str:
    return DATASETS[name].modality


def load_splits(cfg: DataConfig) -> tuple[Split, Split]:
    """The (train, test) splits of ``data.dataset``."""
    return DATASETS[cfg.dataset].load(cfg)


def model_family(name: str) -> ModelFamily:
    return MODELS[name].family()


def targets(name: str, target_modules: tuple[str, ...] | list[str]) -> str | None:
    """The entry of ``target_modules`` that picks module ``name``, matched as peft matches a
    list: the whole name, or its end after a dot ('query' and 'self.query' pick
    'encoder.layer.0.attention.self.query'); None when no entry does."""
    for t in target_modules:
        if name == t or name.endswith("." + t):
            return t
    return None


def lora_module_dims(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(d, k) = (out, in) features of every module LoRA targets, read without loading weights,
    so the offline stage can size ranks before any model exists."""
    family = model_family(cfg.name)
    wanted = family.lora_targets(cfg)
    return [dk for name, dk in family.linear_modules(cfg).items() if targets(name, wanted)]
