"""Tasks: a dataset loader (``data.dataset``) and a model family (``model.name``), by name."""

from fedlora_ray.tasks.base import (
    DATASETS,
    MODELS,
    Batches,
    ModelFamily,
    Split,
    dataset_modality,
    load_splits,
    lora_module_dims,
    model_family,
    register_dataset,
    register_model,
)

__all__ = [
    "DATASETS", "MODELS", "Batches", "ModelFamily", "Split", "dataset_modality", "load_splits",
    "lora_module_dims", "model_family", "register_dataset", "register_model",
]  # fmt: skip
