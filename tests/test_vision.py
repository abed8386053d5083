"""CIFAR-100 (read from a small cifar-100-python folder written here in the real format) and
the timm ViT family: the reader, image batches, LoRA placement, a federated run, and the
refusal of a pretrained model without weights."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open

import fedlora_ray.tasks.cifar100  # noqa: F401  (registers data.dataset: cifar100)
import fedlora_ray.tasks.vit  # noqa: F401  (registers model.name: vit_b16, vit_tiny)
from fedlora_ray.config import ConfigError, ModelConfig, load_config
from fedlora_ray.engine.serial import run_serial
from fedlora_ray.lora.adapter import lora_parameters
from fedlora_ray.preflight import check_run
from fedlora_ray.tasks import Split, load_splits, lora_module_dims, model_family
from fedlora_ray.tasks.cifar100 import cifar100_splits
from fedlora_ray.tasks.vit import IMAGENET_MEAN, IMAGENET_STD, VisionClassifier, VitFamily
from tests.conftest import ROOT, needs_timm, tiny_config

FINE = 5  # fine classes; coarse = fine // 2
FINE_NAMES = [f"fine{i}" for i in range(FINE)]
COARSE_NAMES = ["coarse0", "coarse1", "coarse2"]
PER_CLASS = {"train": 10, "test": 4}


def make_cifar100(parent: Path) -> Path:
    """``parent/cifar-100-python`` with train, test and meta pickled as the real ones are."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in PER_CLASS.items():
        fine = np.tile(np.arange(FINE), n)  # interleaved, as the real files are not sorted
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        data[:, :1024] = (fine * 40)[:, None]  # red plane tells the class: learnable
        record = {
            b"filenames": [f"{i}.png".encode() for i in range(len(fine))],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": (fine // 2).tolist(),
            b"data": data,
        }
        with open(folder / split, "wb") as fh:
            pickle.dump(record, fh)
    meta = {
        b"fine_label_names": [n.encode() for n in FINE_NAMES],
        b"coarse_label_names": [n.encode() for n in COARSE_NAMES],
    }
    with open(folder / "meta", "wb") as fh:
        pickle.dump(meta, fh)
    return folder


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cifar100(tmp_path_factory.mktemp("cifar"))


def _data(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(None, ["data.dataset=cifar100", "model.name=vit_tiny", *overrides]).data


# --- (a) the reader ----------------------------------------------------------------------
def test_reads_the_pickles_from_the_folder_or_its_parent(cifar: Path):
    train, test = cifar100_splits(_data(f"data.root={cifar.parent}"))
    assert train.examples.shape == (50, 3, 32, 32) and train.examples.dtype == np.uint8
    assert len(test) == 20 and train.label_names == tuple(FINE_NAMES)
    assert np.bincount(train.labels).tolist() == [10] * FINE
    assert not train.labels.flags.writeable and not train.examples.flags.writeable
    with open(cifar / "train", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    row = raw[b"data"][train.labels.tolist().index(3)]  # first class-3 example, in file order
    first = train.examples[np.flatnonzero(train.labels == 3)[0]]
    assert np.array_equal(first, row.reshape(3, 32, 32))  # channel-major, pixels as stored
    same, _ = cifar100_splits(_data(f"data.root={cifar}"))  # root = the folder itself
    assert np.array_equal(same.examples, train.examples)


def test_coarse_labels_and_per_class_caps(cifar: Path):
    train, test = cifar100_splits(
        _data(
            f"data.root={cifar}", "data.coarse_labels=true", "data.train_per_class=6", "data.test_per_class=3"
        )
    )
    assert train.label_names == tuple(COARSE_NAMES)
    assert np.bincount(train.labels).tolist() == [6, 6, 6]  # coarse 2 holds one fine class (10)
    assert np.bincount(test.labels).tolist() == [3, 3, 3]
    fine, _ = cifar100_splits(_data(f"data.root={cifar}", "data.train_per_class=3", "data.split_seed=1"))
    again, _ = cifar100_splits(_data(f"data.root={cifar}", "data.train_per_class=3", "data.split_seed=1"))
    other, _ = cifar100_splits(_data(f"data.root={cifar}", "data.train_per_class=3", "data.split_seed=2"))
    assert np.bincount(fine.labels).tolist() == [3] * FINE
    assert np.array_equal(fine.examples, again.examples) and not np.array_equal(fine.examples, other.examples)


def test_a_missing_folder_names_root_and_download(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.root'.*cifar-100-python.*data.download = false"):
        cifar100_splits(_data(f"data.root={tmp_path / 'none'}"))
    broken = make_cifar100(tmp_path)
    (broken / "test").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=r"'data.root'.*test' is not a CIFAR-100 pickle"):
        cifar100_splits(_data(f"data.root={tmp_path}"))


def test_download_goes_through_torchvision(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_cifar100(root, train, download):  # type: ignore[no-untyped-def]
        calls.append((root, train, download))
        make_cifar100(Path(root))

    fake = SimpleNamespace(datasets=SimpleNamespace(CIFAR100=fake_cifar100))
    monkeypatch.setattr("fedlora_ray.timm_import.import_torchvision", lambda: fake)
    train, _ = cifar100_splits(_data(f"data.root={tmp_path / 'dl'}", "data.download=true"))
    assert calls == [(str(tmp_path / "dl"), True, True)] and len(train) == 50
    assert "downloading CIFAR-100 through torchvision to" in capsys.readouterr().out


# --- (b) batches -------------------------------------------------------------------------
def _split(images: np.ndarray) -> Split:
    labels = np.arange(len(images)) % FINE
    return Split(labels, tuple(FINE_NAMES), images)


@needs_timm
def test_a_batch_is_resized_and_normalised_on_the_device():
    images = np.stack([np.full((3, 32, 32), v, dtype=np.uint8) for v in (0, 51, 255)])
    images.setflags(write=False)
    data = model_family("vit_tiny").prepare(ModelConfig(name="vit_tiny"), _split(images))
    assert data.images.dtype == torch.uint8 and data.images.shape == (3, 3, 32, 32)  # one tensor
    (x,), y = data.batch(torch.tensor([2, 1]), torch.device("cpu"))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [2, 1]
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[1, :, 0, 0], (0.2 - mean) / std) and torch.allclose(
        x[0, :, 5, 7], (1 - mean) / std
    )
    assert data.eval_order().tolist() == [0, 1, 2]
    big = model_family("vit_tiny").prepare(ModelConfig(name="vit_tiny", image_size=48), _split(images))
    (x48,), _ = big.batch(torch.tensor([1]), torch.device("cpu"))
    assert x48.shape == (1, 3, 48, 48) and torch.allclose(x48[0, :, 20, 30], (0.2 - mean) / std)
    grey = np.full((2, 1, 28, 28), 255, dtype=np.uint8)  # Fashion-MNIST's shape
    (xg,), _ = (
        model_family("vit_tiny")
        .prepare(ModelConfig(name="vit_tiny"), _split(grey))
        .batch(torch.tensor([0]), torch.device("cpu"))
    )
    assert xg.shape == (1, 3, 32, 32) and torch.allclose(xg[0, :, 3, 3], (1 - mean) / std)
    b16 = model_family("vit_b16").prepare(ModelConfig(name="vit_b16"), _split(images))
    (xb,), _ = b16.batch(torch.tensor([1]), torch.device("cpu"))
    assert xb.shape == (1, 3, 224, 224) and torch.allclose(
        xb[0, :, 0, 0], torch.full((3,), (0.2 - 0.5) / 0.5)
    )


# --- (c) the model -----------------------------------------------------------------------
def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@needs_timm
@pytest.mark.parametrize("on_proj", [False, True])
def test_lora_only_on_the_chosen_blocks(on_proj: bool):
    cfg = ModelConfig(name="vit_tiny", lora_rank=4, lora_blocks=(0, 2), lora_on_proj=on_proj)
    model = model_family("vit_tiny").build(cfg, FINE, seed=3)
    assert isinstance(model, VisionClassifier) and not model.training
    wanted = ["blocks.0.attn.qkv", "blocks.2.attn.qkv"]
    if on_proj:
        wanted = ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.2.attn.qkv", "blocks.2.attn.proj"]
    assert list(lora_parameters(model)) == wanted
    lora = {f"encoder.base_model.model.{m}.lora_{f}.default.weight" for m in wanted for f in "AB"}
    assert _trainable(model) == lora | {"head.weight", "head.bias"}
    b, a = lora_parameters(model)["blocks.0.attn.qkv"]
    assert b.shape == (96, 4) and a.shape == (4, 32) and not b.any()  # B starts at zero
    again = model_family("vit_tiny").build(cfg, FINE, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))
    frozen = model_family("vit_tiny").build(ModelConfig(name="vit_tiny", train_head=False), FINE, seed=3)
    assert not any(p.requires_grad for p in frozen.head.parameters())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, FINE)


@needs_timm
def test_preflight_and_rank_sizing_read_the_block_list(cifar: Path):
    base = ["data.dataset=cifar100", f"data.root={cifar}", "model.name=vit_tiny", "data.test_per_class=2"]
    cfg = tiny_config(*base, "model.lora_blocks=[1,3]", "model.lora_on_proj=true")
    check_run(cfg)
    assert lora_module_dims(cfg.model) == [(96, 32), (32, 32), (96, 32), (32, 32)]
    with pytest.raises(ConfigError, match=r"'model.lora_blocks\[1\]' = 12: .* blocks 0 to 11"):
        check_run(tiny_config(*base, "model.lora_blocks=[0,12]"))
    with pytest.raises(ConfigError, match="'model.lora_rank' = 64: must be <= 32"):
        check_run(tiny_config(*base, "model.lora_rank=64", "model.lora_alpha=64"))


@needs_timm
# --- (d) a federated run -----------------------------------------------------------------
def test_a_federated_run_on_cifar100_with_the_tiny_vit(cifar: Path, tmp_path):
    cfg = tiny_config(
        "data.dataset=cifar100", f"data.root={cifar}", "model.name=vit_tiny", "data.test_per_class=2",
        "model.lora_blocks=[0,2]", "federation.lr=0.01",
    )  # fmt: skip
    assert load_splits(cfg.data)[1].labels.tolist().count(0) == 2
    summary = run_serial(cfg, tmp_path / "run")
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pylist()
    assert len(rounds) == 2 and np.isfinite(summary["final_test_accuracy"])
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "tiny-vit-d32-l12-p8-i32"
    )
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as saved:
        modules = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in saved.keys()}  # noqa: SIM118
    assert modules == {"blocks.0.attn.qkv", "blocks.2.attn.qkv"}


@needs_timm
@pytest.mark.slow  # a fresh interpreter importing peft and timm: about 10 s
def test_importing_torchvision_first_through_transformers_works():
    """transformers imports torchvision whenever it is installed; with the import guard on, a
    torchvision whose compiled ops do not load beside this torch does not break it (or timm)."""
    code = (
        "from fedlora_ray.timm_import import guard_torchvision_import\n"
        "guard_torchvision_import()\n"
        "import peft, timm\n"  # peft imports transformers, which imports torchvision
        "print(timm.__version__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@needs_timm
# --- (e) the pretrained family -----------------------------------------------------------
def test_vit_b16_without_weights_is_refused_before_building(monkeypatch):
    def no_model(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a model was built")

    monkeypatch.setattr(VitFamily, "_create", no_model)
    family = model_family("vit_b16")
    with pytest.raises(ConfigError, match=r"'model.weights' = '': .*model.allow_random_init = false"):
        family.build(ModelConfig(name="vit_b16"), FINE, seed=0)
    with pytest.raises(ConfigError, match="'model.weights'.*allow_random_init"):
        family.linear_modules(ModelConfig(name="vit_b16"))  # preflight stops there too
    with pytest.raises(ConfigError, match="'model.weights' = '/no/such.safetensors': no such file"):
        family.build(ModelConfig(name="vit_b16", weights="/no/such.safetensors"), FINE, seed=0)


@needs_timm
def test_vit_b16_builds_with_random_init():
    cfg = ModelConfig(name="vit_b16", allow_random_init=True, lora_rank=4)
    model = model_family("vit_b16").build(cfg, FINE, seed=0)
    assert list(lora_parameters(model)) == [f"blocks.{i}.attn.qkv" for i in (0, 3, 6, 9)]
    assert model.head.in_features == 768 and model_family("vit_b16").hub_id(cfg).endswith("-random-init")
    assert lora_parameters(model)["blocks.9.attn.qkv"][1].shape == (4, 768)


@needs_timm
def test_weights_from_a_local_file_are_loaded(tmp_path):
    """The file path of a pretrained family, on timm's smallest ViT (vit_b16 is the same code)."""
    from safetensors.torch import save_file

    from fedlora_ray.timm_import import import_timm

    arch = "vit_tiny_patch16_224"
    source = import_timm().create_model(arch, pretrained=False, num_classes=10)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    family = VitFamily(arch)
    cfg = ModelConfig(name="vit_small_test", weights=str(tmp_path / "w.safetensors"), lora_blocks=(0,))
    encoder = family.build(cfg, FINE, seed=0).encoder.base_model.model  # type: ignore[union-attr]
    assert torch.equal(encoder.pos_embed, source.pos_embed)
    assert torch.equal(encoder.blocks[5].mlp.fc1.weight, source.blocks[5].mlp.fc1.weight)
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "w.safetensors").rename(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"pretrained_cfg": {"mean": [0.1] * 3, "std": [0.2] * 3}}))
    folder_cfg = ModelConfig(name="vit_small_test", weights=str(folder), lora_blocks=(0,))
    encoder = family.build(folder_cfg, FINE, seed=1).encoder.base_model.model  # type: ignore[union-attr]
    assert torch.equal(encoder.pos_embed, source.pos_embed)
    assert family.prepare(folder_cfg, _split(np.zeros((1, 3, 8, 8), np.uint8))).mean == (0.1, 0.1, 0.1)
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="'model.weights'.*could not load"):
        family.build(folder_cfg, FINE, seed=0)
