"""The Fashion-MNIST reader on idx files written here in the same format (the real ones come from
Debian's dataset-fashion-mnist)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from fedlora_ray.components import load_run_config
from fedlora_ray.config import ConfigError, load_config
from fedlora_ray.tasks.fashion_mnist import LABEL_NAMES, fashion_mnist_splits, read_idx


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = head + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_fashion_mnist(folder, per_class: int = 6, compress: bool = True):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", per_class), ("t10k", 2)):
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 256, size=(len(labels), 28, 28))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


@pytest.mark.parametrize("compress", [True, False])
def test_reads_idx_files_gzipped_or_not(tmp_path, compress):
    root = make_fashion_mnist(tmp_path / "fm", compress=compress)
    cfg = load_config(None, [f"data.root={root}", "data.train_per_class=4", "data.test_per_class=2"])
    train, test = fashion_mnist_splits(cfg.data)
    assert train.examples.shape == (40, 1, 28, 28) and train.examples.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [4] * 10 and len(test) == 20
    assert train.label_names == LABEL_NAMES and not train.labels.flags.writeable
    raw = read_idx(root / ("train-images-idx3-ubyte" + (".gz" if compress else "")))
    first = np.flatnonzero(np.repeat(np.arange(10), 6) == train.labels[0])
    assert any(np.array_equal(raw[i], train.examples[0, 0]) for i in first)  # the pixels as stored


def test_a_missing_folder_names_the_field(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path / 'none'}"])
    with pytest.raises(ConfigError, match="'data.root'.*dataset-fashion-mnist"):
        fashion_mnist_splits(cfg.data)


def test_the_driver_reads_labels_only(tmp_path, monkeypatch):
    """Partitioning (what the driver does) reads the labels files; the images file is read only
    where a model is fed (a client trainer), and once per process."""
    import fedlora_ray.tasks.fashion_mnist as fm
    from fedlora_ray.algorithm.state import build_context
    from fedlora_ray.lora import Adapter
    from fedlora_ray.preflight import check_data
    from fedlora_ray.tasks import load_splits

    root = make_fashion_mnist(tmp_path / "fm")
    read = []
    real = fm.read_idx
    monkeypatch.setattr(fm, "read_idx", lambda path: read.append(path.name) or real(path))
    cfg = load_run_config(None, ["data.dataset=fashion_mnist", f"data.root={root}", "data.test_per_class=2",
                                 "model.name=efficientnet_tiny",
                                 "federation.num_clients=10", "federation.clients_per_round=2"])  # fmt: skip
    data = check_data(cfg)  # the launcher's one read and partition draw
    import torch

    adapter = Adapter({"m": (torch.zeros(4, 2), torch.zeros(2, 4))}, {})
    build_context(cfg, adapter, data.partition, data.label_names)  # reads nothing more
    assert read and all("labels" in name for name in read)
    train, _ = load_splits(cfg.data)
    assert train.examples.shape == (60, 1, 28, 28) and train.examples is train.examples  # read once
    assert sum("images" in name for name in read) == 1
