"""Write the global adapter in peft's on-disk format, without needing a model in the process.

``adapter_config.json`` + ``adapter_model.safetensors`` load with ``PeftModel.from_pretrained``
onto the base encoder; the head goes beside them in ``classifier.safetensors`` with
``labels.json``. Written to a temporary folder and renamed, so a crash leaves no half adapter.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from fedlora_ray.atomic_write import atomic_path
from fedlora_ray.config import ModelConfig
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.lora.model import lora_config

_PEFT_SAVE_PREFIX = "base_model.model."


def adapter_config_json(cfg: ModelConfig) -> str:
    """The text of peft's ``adapter_config.json`` for ``cfg``, as peft writes it. It imports peft
    (seconds, 150 MB), so a process that holds a model makes it for one that does not."""
    from fedlora_ray.tasks import model_family  # tasks build on lora: import when used

    family = model_family(cfg.name)
    peft_cfg = lora_config(
        dataclasses.replace(cfg, target_modules=family.lora_targets(cfg)), family.fan_in_fan_out(cfg)
    )
    peft_cfg.base_model_name_or_path = family.hub_id(cfg)
    with tempfile.TemporaryDirectory() as folder:
        peft_cfg.save_pretrained(folder)
        return (Path(folder) / "adapter_config.json").read_text()


def save_adapter(
    adapter: Adapter,
    cfg: ModelConfig,
    label_names: tuple[str, ...],
    out: Path,
    config_json: str | None = None,
) -> Path:
    """Write the adapter to ``out``; ``config_json`` is ``adapter_config_json(cfg)`` made
    elsewhere (made here when None)."""
    from fedlora_ray.tasks import model_family

    out = Path(out)
    with atomic_path(out, folder=True) as tmp:
        family = model_family(cfg.name)
        if config_json is None:
            config_json = adapter_config_json(cfg)
        (tmp / "adapter_config.json").write_text(config_json)
        tensors = {}
        convs = family.conv_modules(cfg)  # peft keeps a 1x1 convolution's factors 4-D
        for module, (b, a) in adapter.lora.items():
            if module in convs:
                b, a = b[:, :, None, None], a[:, :, None, None]
            tensors[f"{_PEFT_SAVE_PREFIX}{module}.lora_B.weight"] = b.contiguous()
            tensors[f"{_PEFT_SAVE_PREFIX}{module}.lora_A.weight"] = a.contiguous()
        save_file(tensors, str(tmp / "adapter_model.safetensors"))
        if adapter.head:
            save_file(
                {k: v.contiguous() for k, v in adapter.head.items()}, str(tmp / "classifier.safetensors")
            )
        (tmp / "labels.json").write_text(json.dumps(list(label_names)))
    return out
