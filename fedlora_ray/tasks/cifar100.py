"""``data.dataset: cifar100``: CIFAR-100, 32 x 32 colour images of 100 fine classes grouped into
20 coarse superclasses, 50,000 train and 10,000 test (500 and 100 per fine class), read from the
standard ``cifar-100-python`` folder: the pickles ``train``, ``test`` (dicts with bytes keys:
``b'data'``, N x 3072 uint8, each row the red, green then blue 32 x 32 plane;
``b'fine_labels'``; ``b'coarse_labels'``) and ``meta`` (``b'fine_label_names'``,
``b'coarse_label_names'``). Pickles run code when loaded: point ``data.root`` only at a copy
of the official archive (as torchvision does, this reader trusts it).

``data.root`` is that folder or its parent (where the archive unpacks or torchvision downloads
to); empty means ``~/.cache/fedlora_ray/datasets``. ``data.download`` fetches a missing copy
through torchvision. Images stay uint8 (N x 3 x 32 x 32); the model family resizes and
normalises them on the device."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fedlora_ray.config import ConfigError, DataConfig
from fedlora_ray.tasks.base import Split, cap_per_class, register_dataset

DEFAULT_ROOT = "~/.cache/fedlora_ray/datasets"
FOLDER = "cifar-100-python"
_FILES = ("train", "test", "meta")


def _has_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _FILES)


def find_folder(root: Path) -> Path | None:
    """The ``cifar-100-python`` folder: ``root`` itself or ``root/cifar-100-python``."""
    for folder in (root, root / FOLDER):
        if _has_files(folder):
            return folder
    return None


def _download(root: Path) -> None:
    """Fetch and unpack the archive into ``root`` (or next to ``root`` when ``root`` is the
    ``cifar-100-python`` folder itself) through torchvision, which checks its MD5."""
    from fedlora_ray.timm_import import import_torchvision

    parent = root.parent if root.name == FOLDER else root
    print(f"downloading CIFAR-100 through torchvision to {parent} (from https://www.cs.toronto.edu/~kriz/)")
    parent.mkdir(parents=True, exist_ok=True)
    datasets = import_torchvision().datasets
    datasets.CIFAR100(str(parent), train=True, download=True)


def _not_cifar(path: Path, what: str) -> ConfigError:
    return ConfigError(f"config field 'data.root': {str(path)!r} is not a CIFAR-100 pickle ({what})")


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as fh:
            out = pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise _not_cifar(path, f"{type(err).__name__}: {err}") from None
    missing = [k for k in keys if not isinstance(out, dict) or k not in out]
    if missing:
        raise _not_cifar(path, f"no {', '.join(repr(k) for k in missing)}")
    return out  # type: ignore[no-any-return]


def _keys(coarse: bool) -> tuple[bytes, bytes]:
    kind = "coarse" if coarse else "fine"
    return f"{kind}_label_names".encode(), f"{kind}_labels".encode()


@functools.lru_cache(maxsize=8)
def _labels(folder: str, coarse: bool, split: str, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices kept, their labels). The pickle holds the pixels too; they are dropped here, so
    a process that only partitions (the driver) keeps none."""
    labels_key = _keys(coarse)[1]
    raw = _unpickle(Path(folder) / split, (b"data", labels_key))
    labels = np.asarray(raw[labels_key], dtype=np.int64)
    data = raw[b"data"]
    if getattr(data, "ndim", 0) != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise _not_cifar(Path(folder) / split, "expected N x 3072 uint8 data and N labels")
    keep = cap_per_class(labels, cap, seed)
    y = labels[keep]
    y.setflags(write=False)
    return keep, y


@functools.lru_cache(maxsize=4)
def _images(folder: str, coarse: bool, split: str, cap: int, seed: int) -> np.ndarray:
    """The kept images, N x 3 x 32 x 32 uint8 (the rows are channel-major), read-only."""
    keep, _ = _labels(folder, coarse, split, cap, seed)
    data = np.asarray(_unpickle(Path(folder) / split, (b"data",))[b"data"], dtype=np.uint8)
    x = np.ascontiguousarray(data[keep].reshape(-1, 3, 32, 32))
    x.setflags(write=False)
    return x


def _load(
    folder: str, coarse: bool, train_per_class: int, test_per_class: int, seed: int
) -> tuple[Split, Split]:
    """Labels now; the pixels when a model family asks (callers must not modify the arrays)."""
    names_key = _keys(coarse)[0]
    raw_names = _unpickle(Path(folder) / "meta", (names_key,))[names_key]
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw_names)
    out = []
    for split, cap in (("train", train_per_class), ("test", test_per_class)):
        _, y = _labels(folder, coarse, split, cap, seed)
        out.append(Split(y, names, functools.partial(_images, folder, coarse, split, cap, seed)))
    return out[0], out[1]


@register_dataset("cifar100", "image")
def cifar100_splits(cfg: DataConfig) -> tuple[Split, Split]:
    """Train and test splits, labels fine or (``data.coarse_labels``) coarse;
    ``data.train_per_class`` (0: all) and ``data.test_per_class`` cap each class, drawn with
    ``data.split_seed``."""
    root = Path(cfg.root or DEFAULT_ROOT).expanduser()
    folder = find_folder(root)
    if folder is None and cfg.download:
        _download(root)
        folder = find_folder(root)
    if folder is None:
        raise ConfigError(
            f"config field 'data.root' = {cfg.root!r}: no CIFAR-100 in {str(root)!r}; expected the "
            f"folder {FOLDER}/ holding the pickles train, test and meta, or data.root pointing at "
            f"that folder itself. data.download = {str(cfg.download).lower()}: set it to true to "
            "fetch CIFAR-100 through torchvision (needs internet), or unpack cifar-100-python.tar.gz "
            "(https://www.cs.toronto.edu/~kriz/cifar.html) there"
        )
    return _load(str(folder), cfg.coarse_labels, cfg.train_per_class, cfg.test_per_class, cfg.split_seed)
