"""``data.dataset: fashion_mnist``: Zalando's Fashion-MNIST, 28 x 28 grey images of 10 clothing
classes, 60,000 train and 10,000 test, read from the four idx files (gzipped or not) in
``data.root``: by default where Debian's ``dataset-fashion-mnist`` puts them. Images stay uint8
(N x 1 x 28 x 28); the model family resizes and normalises them on the device."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from fedlora_ray.config import ConfigError, DataConfig
from fedlora_ray.tasks.base import Split, cap_per_class, register_dataset

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
LABEL_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: magic with the dtype code and rank, big-endian sizes, then
    the data) as a numpy array; ``path`` may end in .gz."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise ConfigError(
        f"config field 'data.root' = {str(root)!r}: no {stem}(.gz) there; install Debian's "
        "dataset-fashion-mnist or point data.root at a folder with the four Fashion-MNIST idx files"
    )


@functools.lru_cache(maxsize=4)
def _load(root: str, train_per_class: int, test_per_class: int, seed: int) -> tuple[Split, Split]:
    out = []
    for split, cap in (("train", train_per_class), ("test", test_per_class)):
        images_file, labels_file = (_find(Path(root), stem) for stem in _FILES[split])
        images, labels = read_idx(images_file), read_idx(labels_file).astype(np.int64)
        keep = cap_per_class(labels, cap, seed)
        x = np.ascontiguousarray(images[keep][:, None, :, :])  # N x 1 x 28 x 28, uint8
        y = labels[keep]
        x.setflags(write=False)
        y.setflags(write=False)
        out.append(Split(y, LABEL_NAMES, x))
    return out[0], out[1]


@register_dataset("fashion_mnist", "image")
def fashion_mnist_splits(cfg: DataConfig) -> tuple[Split, Split]:
    """Train and test splits; ``data.train_per_class`` (0: all 6,000) and ``data.test_per_class``
    cap each class, drawn with ``data.split_seed``."""
    return _load(cfg.root or DEFAULT_ROOT, cfg.train_per_class, cfg.test_per_class, cfg.split_seed)
