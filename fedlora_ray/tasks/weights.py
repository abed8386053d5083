"""Where a base model's pretrained weights come from: ``model.weights`` read as a local file, a
folder holding one, or a hub id. Shared by the model families; errors name the field."""

from __future__ import annotations

from pathlib import Path

from fedlora_ray.config import ConfigError, ModelConfig
from fedlora_ray.tasks.base import error_reason

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in a folder, looked for first
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def weights_error(cfg: ModelConfig, what: str) -> ConfigError:
    return ConfigError(f"config field 'model.weights' = {cfg.weights!r}: {what}")


def is_local(weights: str) -> bool:
    """A path rather than a hub id: something that exists, or written like a path."""
    return Path(weights).expanduser().exists() or weights.startswith(("/", "./", "../", "~"))


def _weights_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    return found[0] if found else None


def local_weights_file(cfg: ModelConfig) -> str:
    """The state-dict file ``model.weights`` names (a file, or the one a folder holds), refusing
    a missing path, a folder without one and a file of another kind."""
    path = Path(cfg.weights).expanduser()
    if path.is_dir():
        found = _weights_file(path)
        if found is None:
            raise weights_error(
                cfg,
                f"the folder holds no weights file ({', '.join(WEIGHT_FILES)} or *"
                f"{', *'.join(WEIGHT_SUFFIXES)})",
            )
        return str(found)
    if not path.is_file():
        raise weights_error(cfg, "no such file or folder")
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise weights_error(cfg, f"not a state-dict file (*{', *'.join(WEIGHT_SUFFIXES)})")
    return str(path)


def load_error(cfg: ModelConfig, origin: str, where: str, arch: str, err: BaseException) -> ConfigError:
    """The error for weights that did not load: the first line of the reason, and for the hub
    what to do offline."""
    reason = error_reason(err, 300)
    if origin == "file":
        return weights_error(cfg, f"could not load {where!r} into timm's {arch} ({reason})")
    return weights_error(
        cfg,
        f"could not load {where!r} from the Hugging Face hub into timm's {arch} ({reason}); offline "
        "(HF_HUB_OFFLINE) or without internet, model.weights must be a local state-dict file or a "
        "folder holding one",
    )
