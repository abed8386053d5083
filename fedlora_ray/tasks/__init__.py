"""Tasks: a dataset loader (``data.dataset``) and a model family (``model.name``), by name.

Importing the package registers the built-in tasks (``fedlora_ray.tasks.builtin``) without
loading torch or a model library: a family's module is imported when it is first asked for."""

from fedlora_ray.tasks import builtin  # noqa: F401  (fills DATASETS and MODELS with the built-ins)
from fedlora_ray.tasks.base import (
    DATASETS,
    MODELS,
    Batches,
    DatasetSpec,
    ModelFamily,
    ModelSpec,
    Split,
    dataset_modality,
    load_splits,
    lora_module_dims,
    model_family,
    register_dataset,
    register_model,
)

__all__ = [
    "DATASETS", "MODELS", "Batches", "DatasetSpec", "ModelFamily", "ModelSpec", "Split",
    "dataset_modality", "load_splits", "lora_module_dims", "model_family", "register_dataset",
    "register_model",
]  # fmt: skip
