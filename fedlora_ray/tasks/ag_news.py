"""``data.dataset: ag_news``: AG's News topic classification (Zhang, Zhao and LeCun 2015), 4
classes (World, Sports, Business, Sci/Tech), 30,000 train and 1,900 test articles per class,
read from the standard CSV pair ``train.csv`` / ``test.csv`` in ``data.root`` (no header; columns
class index 1-4, title, description). The text of an article is ``title + ". " + description``
with the CSV's backslash-escaped newlines (the two characters ``\\n``) turned into spaces.
``classes.txt`` beside the pair, when present, names the classes (one per line).

Without the files and with ``data.download``, the pair is fetched once through Hugging Face
``datasets`` (``ag_news``) and written into ``data.root``, so later runs are offline. Hugging
Face holds each article as one ``text`` (title and description joined by a space); the written
CSV keeps that text in the title column with an empty description."""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fedlora_ray.atomic_write import atomic_path, write_bytes
from fedlora_ray.config import ConfigError, DataConfig
from fedlora_ray.tasks.base import Split, cap_per_class, error_reason, register_dataset

LABEL_NAMES = ("World", "Sports", "Business", "Sci/Tech")
FILES = ("train.csv", "test.csv")
HF_NAME = "ag_news"  # the Hugging Face datasets id


def default_root() -> Path:
    """Where the pair lives when ``data.root`` is empty: a per-user cache folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "fedlora_ray" / "ag_news"


def article_text(title: str, description: str) -> str:
    """``title + ". " + description`` (the usual AG News preprocessing), the CSV's escaped
    newlines (``\\n``) and runs of white space turned into single spaces; a missing part is
    left out with its separator."""
    parts = [" ".join(p.replace("\\n", " ").split()) for p in (title, description)]
    return ". ".join(p for p in parts if p)


def read_label_names(root: Path) -> tuple[str, ...]:
    """The class names from ``classes.txt`` (one per line) when present, else AG News's four."""
    path = root / "classes.txt"
    if not path.is_file():
        return LABEL_NAMES
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) < 2:
        raise ConfigError(f"config field 'data.root' = {str(root)!r}: {path} names fewer than 2 classes")
    return names


def read_csv(path: Path, num_classes: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """(labels 0..num_classes-1 as int64, texts) of one AG News CSV file."""
    labels: list[int] = []
    texts: list[str] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row:
                continue
            if len(row) != 3 or not row[0].strip().isdigit() or not 1 <= int(row[0]) <= num_classes:
                raise ConfigError(
                    f"config field 'data.root' = {str(path.parent)!r}: {path.name} row {line} is not "
                    f"'class index (1-{num_classes}), title, description': {row[:3]!r}"
                )
            labels.append(int(row[0]) - 1)
            texts.append(article_text(row[1], row[2]))
    return np.asarray(labels, dtype=np.int64), tuple(texts)


def _write_csv(path: Path, rows: Iterable[tuple[int, str, str]]) -> None:
    """Write atomically, so processes that fetch at once never read half a file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(rows)


def download(root: Path) -> None:
    """Fetch AG News through Hugging Face ``datasets`` and write the CSV pair (and classes.txt)
    into ``root``."""
    print(f"downloading AG News through Hugging Face datasets to {root}", flush=True)
    try:
        import datasets  # optional: only this path needs it
    except ImportError:
        raise ConfigError(
            f"config field 'data.download' = true: fetching AG News into data.root ({str(root)!r}) "
            "needs the Hugging Face 'datasets' package (pip install datasets), or put train.csv "
            "and test.csv there yourself"
        ) from None
    try:
        ds = datasets.load_dataset(HF_NAME)
    except Exception as err:  # noqa: BLE001  (offline, hub errors: all mean "not fetched")
        reason = error_reason(err)
        raise ConfigError(
            f"config field 'data.download' = true: could not fetch {HF_NAME!r} through Hugging "
            f"Face datasets ({reason}); put train.csv and test.csv into data.root "
            f"({str(root)!r}) yourself"
        ) from None
    root.mkdir(parents=True, exist_ok=True)
    try:
        names = tuple(ds["train"].features["label"].names)
    except (AttributeError, KeyError):
        names = LABEL_NAMES
    for name in FILES:
        part = ds[name.removesuffix(".csv")]
        rows = ((int(y) + 1, str(x), "") for x, y in zip(part["text"], part["label"]))
        _write_csv(root / name, rows)
    write_bytes(root / "classes.txt", "".join(n + "\n" for n in names).encode("utf-8"))


@functools.lru_cache(maxsize=4)
def _load(
    root: str, download_: bool, train_per_class: int, test_per_class: int, seed: int
) -> tuple[Split, Split]:
    folder = Path(root)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing and download_:
        download(folder)
    elif missing:
        raise ConfigError(
            f"config field 'data.root' = {root!r}: no {' or '.join(missing)} there (AG News "
            "expects the CSV pair train.csv and test.csv: class index 1-4, title, description); "
            "put them there, or set data.download=true to fetch them through Hugging Face datasets"
        )
    names = read_label_names(folder)
    out = []
    for name, cap in zip(FILES, (train_per_class, test_per_class)):
        labels, texts = read_csv(folder / name, len(names))
        keep = cap_per_class(labels, cap, seed)
        y = labels[keep]
        y.setflags(write=False)  # cached and shared: nobody may change it
        out.append(Split(y, names, tuple(texts[i] for i in keep)))
    return out[0], out[1]


@register_dataset("ag_news", "text")
def ag_news_splits(cfg: DataConfig) -> tuple[Split, Split]:
    """Train and test splits; ``data.train_per_class`` (0: all 30,000) and
    ``data.test_per_class`` (of 1,900) cap each class, drawn with ``data.split_seed``."""
    root = str(Path(cfg.root).expanduser()) if cfg.root else str(default_root())
    return _load(root, cfg.download, cfg.train_per_class, cfg.test_per_class, cfg.split_seed)
