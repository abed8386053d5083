"""Load a finished run's classifier: the base model of its config plus its saved global adapter.

    from fedlora_ray import load_classifier
    clf = load_classifier("runs/quickstart-20250101-120000")
    clf.predict(["a domesticated carnivorous mammal", "a sweet baked food"])  # label names

The run directory holds ``config.json`` (the run's config, with TSFA's chosen rank already in
``model.lora_rank``) and ``adapter/`` as ``fedlora_ray.lora.save`` writes it: peft's
``adapter_config.json`` + ``adapter_model.safetensors``, the trained head in
``classifier.safetensors`` (absent when the head was frozen: the seeded head is rebuilt exactly)
and ``labels.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedlora_ray.components import load_run_config
from fedlora_ray.config import RunConfig
from fedlora_ray.lora.model import TextClassifier


@dataclass
class Classifier:
    """A run's trained text classifier, in eval mode, on ``device``."""

    model: TextClassifier
    tokenizer: Any
    label_names: tuple[str, ...]
    config: RunConfig
    device: torch.device

    @torch.no_grad()
    def logits(self, texts: list[str], batch_size: int | None = None) -> torch.Tensor:
        """(len(texts), num_labels) logits on the CPU, tokenised as in training."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch_size = batch_size or self.config.federation.eval_batch_size
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                texts[start : start + batch_size],
                padding="max_length",
                truncation=True,
                max_length=self.config.model.max_length,
                return_tensors="pt",
            )
            ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
            out.append(self.model(ids, mask).float().cpu())
        if not out:
            return torch.empty(0, len(self.label_names))
        return torch.cat(out)

    def predict(self, texts: list[str]) -> list[str]:
        """The predicted label name of each text."""
        return [self.label_names[i] for i in self.logits(texts).argmax(-1).tolist()]


def load_classifier(run_dir: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """The classifier a run trained: RUN_DIR/config.json's base model with RUN_DIR/adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from fedlora_ray.lora.adapter import lora_parameters
    from fedlora_ray.lora.model import TextClassifier, load_tokenizer
    from fedlora_ray.tasks import model_family

    run_dir = Path(run_dir)
    adapter_dir = run_dir / "adapter"
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {run_dir} is not a run directory")
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: the run saved no adapter (it did not finish, or ran with "
            "log.save_adapter=false)"
        )
    cfg = load_run_config(None, base=json.loads(config_file.read_text()))
    labels = tuple(json.loads((adapter_dir / "labels.json").read_text()))

    model = model_family(cfg.model.name).build(cfg.model, len(labels), cfg.federation.seed)
    if not isinstance(model, TextClassifier):  # predict() takes texts
        raise ValueError(f"load_classifier reads text classifiers; model.name={cfg.model.name!r} is not one")
    # peft's own loader: the saved keys read base_model.model.<module>.lora_{A,B}.weight
    state = load_file(str(weights))
    result = set_peft_model_state_dict(model.encoder, state)
    expected = {f"base_model.model.{m}.lora_{ab}.weight" for m in lora_parameters(model) for ab in "AB"}
    if set(state) != expected or getattr(result, "unexpected_keys", None):
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"{weights} does not match the model of {config_file}: missing {missing[:3]}, "
            f"unexpected {extra[:3]}"
        )
    head_file = adapter_dir / "classifier.safetensors"
    if head_file.is_file():
        model.head.load_state_dict(load_file(str(head_file)))
    dev = torch.device(device)
    model.to(dev).eval()
    return Classifier(model, load_tokenizer(cfg.model), labels, cfg, dev)
