"""``data.dataset: fashion_mnist``: Zalando's Fashion-MNIST, 28 x 28 grey images of 10 clothing
classes, 60,000 train and 10,000 test, read from the four idx files (gzipped or not) in
``data.root``: by default where Debian's ``dataset-fashion-mnist`` puts them. Images stay uint8
(N x 1 x 28 x 28); the model family resizes and normalises them on the device. The labels come
from the small labels files; the images are read only when a model family asks for them (on the
client actors, never on the driver)."""

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


@functools.lru_cache(maxsize=8)
def _labels(root: str, split: str, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices kept, their labels): from the small labels file alone."""
    labels = read_idx(_find(Path(root), _FILES[split][1])).astype(np.int64)
    keep = cap_per_class(labels, cap, seed)
    y = labels[keep]
    y.setflags(write=False)
    return keep, y


@functools.lru_cache(maxsize=4)
def _images(root: str, split: str, cap: int, seed: int) -> np.ndarray:
    """The kept images, N x 1 x 28 x 28 uint8, read-only; read once per process."""
    keep, _ = _labels(root, split, cap, seed)
    images = read_idx(_find(Path(root), _FILES[split][0]))
    x = np.ascontiguousarray(images[keep][:, None, :, :])
    x.setflags(write=False)
    return x


def _split(root: str, split: str, cap: int, seed: int) -> Split:
    _find(Path(root), _FILES[split][0])  # a missing images file is refused now, not when first read
    _, y = _labels(root, split, cap, seed)
    return Split(y, LABEL_NAMES, functools.partial(_images, root, split, cap, seed))


@register_dataset("fashion_mnist", "image")
def fashion_mnist_splits(cfg: DataConfig) -> tuple[Split, Split]:
    """Train and test splits; ``data.train_per_class`` (0: all 6,000) and ``data.test_per_class``
    cap each class, drawn with ``data.split_seed``."""
    root = cfg.root or DEFAULT_ROOT
    return (
        _split(root, "train", cfg.train_per_class, cfg.split_seed),
        _split(root, "test", cfg.test_per_class, cfg.split_seed),
    )
