"""The task seam: datasets and model families are looked up by name; a new task is one module
and a registration, and the round and trainer never name a dataset or a model family."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from fedlora_ray.config import ConfigError, ModelConfig, RunConfig
from fedlora_ray.engine.serial import run_serial
from fedlora_ray.tasks import (
    DATASETS,
    MODELS,
    ModelFamily,
    Split,
    model_family,
    register_dataset,
    register_model,
)  # fmt: skip
from tests.conftest import ROOT, _timm_importable, tiny_config


class _Points:
    """Batches of 2-d points (a toy 'image' modality: float features, no tokenizer)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx, device):
        return (self.x[idx].to(device),), self.y[idx].to(device)

    def eval_order(self):
        return torch.arange(len(self.y))


class _LoraMLP(nn.Module):
    """A frozen random base layer with LoRA through peft, and a head."""

    def __init__(self, cfg: ModelConfig, num_labels: int, seed: int) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        base = nn.Sequential()
        base.add_module("proj", nn.Linear(2, 16))
        torch.manual_seed(seed + 1)
        self.encoder = get_peft_model(
            base, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=["proj"])
        )
        self.head = nn.Linear(16, num_labels)

    def forward(self, x):
        return self.head(torch.relu(self.encoder(x)))


class PointsFamily(ModelFamily):
    modality = "points"

    def build(self, cfg, num_labels, seed):
        return _LoraMLP(cfg, num_labels, seed)

    def prepare(self, cfg, split, device=None):
        return _Points(split.examples, split.labels)

    def linear_modules(self, cfg):
        return {"proj": (16, 2)}

    def hub_id(self, cfg):
        return "toy-points"


def _blobs(cfg):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 2)) + 2.0 * y[:, None]
    labels = y.astype(np.int64)
    return (
        Split(labels[:300], ("left", "right"), x[:300]),
        Split(labels[300:], ("left", "right"), x[300:]),
    )


def _blobs_rules(cfg: RunConfig) -> None:
    """The dataset's own rule, asked of every config that names it."""
    if cfg.data.train_per_class > 150:
        raise ConfigError(f"config field 'data.train_per_class' = {cfg.data.train_per_class}: blobs has 150")


def test_a_new_task_is_a_registration_and_learns(tmp_path):
    register_dataset("blobs", "points", validate=_blobs_rules)(_blobs)
    register_model("points_mlp", PointsFamily())
    try:
        with pytest.raises(ConfigError, match="'data.train_per_class' = 200: blobs has 150"):
            tiny_config("data.dataset=blobs", "model.name=points_mlp", "data.train_per_class=200")
        cfg = tiny_config(
            "data.dataset=blobs", "model.name=points_mlp", "model.target_modules=[proj]",
            "model.lora_rank=2", "model.lora_alpha=4",  # proj maps 2 inputs: rank <= 2
            "federation.rounds=4", "federation.local_epochs=3", "federation.lr=0.02",
        )  # fmt: skip
        summary = run_serial(cfg, tmp_path / "run")
        assert summary["final_test_accuracy"] > 0.85  # two well-separated blobs
        with pytest.raises(ConfigError, match="a points model cannot train on data.dataset = 'wordnet'"):
            tiny_config("model.name=points_mlp", "model.target_modules=[proj]")
    finally:
        DATASETS.pop("blobs", None)
        MODELS.pop("points_mlp", None)


def test_each_built_in_model_entry_states_its_familys_modality():
    """MODELS holds light entries (no torch); each one's modality is the family's own."""
    vision = {"vit_b16", "vit_tiny", "efficientnet_lite0", "efficientnet_tiny"}
    for name, spec in MODELS.items():
        if name in vision and not _timm_importable():
            continue
        assert model_family(name).modality == spec.modality, name
        assert model_family(name) is model_family(name)  # one family object per process


def test_unknown_task_names_are_refused_with_the_registered_ones():
    with pytest.raises(ConfigError, match="'data.dataset' = 'nosuch': allowed values are .*'wordnet'"):
        tiny_config("data.dataset=nosuch")
    with pytest.raises(ConfigError, match="'model.name' = 'gpt9'.*'minilm', 'tiny'"):
        tiny_config("model.name=gpt9")


def test_the_round_and_the_trainer_name_no_dataset_or_model_family():
    files = ["fedlora_ray/algorithm", "fedlora_ray/train.py", "fedlora_ray/engine/serial.py", "actors"]
    found = subprocess.run(
        ["grep", "-rEn", "wordnet|minilm|tokeni[sz]|Bert|load_wordnet", *files],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert found == "", found
