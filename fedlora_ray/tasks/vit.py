"""``model.name: vit_b16 | vit_tiny``: timm vision transformers with peft LoRA on the attention
``qkv`` (and, with ``model.lora_on_proj``, ``proj``) of the blocks ``model.lora_blocks``, the
class-token feature and a linear head.

- ``vit_b16`` is timm's ``vit_base_patch16_224``. ``model.weights`` is a local state-dict file
  (.safetensors, .pth, .pt, .bin), a folder holding one (``model.safetensors`` or
  ``pytorch_model.bin`` first, as the hub lays them out), or a hub id such as
  ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`` (needs internet). Empty weights are
  refused unless ``model.allow_random_init`` (speed benchmarks): then it is random.
- ``vit_tiny`` is a random ViT as deep as ViT-B (12 blocks, so ``model.lora_blocks`` means the
  same) but 32 wide, on 32 x 32 input with patch 8, for tests.

``model.target_modules`` (a text-model field) is ignored: the LoRA targets are the full module
names ``blocks.{i}.attn.qkv`` (and ``blocks.{i}.attn.proj``) built from ``model.lora_blocks``
(``lora_targets``). Images stay uint8 per actor; a batch is moved to the device as uint8, then
converted, resized (bilinear) to ``model.image_size`` (0: the model's own, 224 or 32) and
normalised with the weights' mean and std there, a whole batch at a time.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from fedlora_ray.config import ConfigError, ModelConfig
from fedlora_ray.tasks.base import ModelFamily, Split
from fedlora_ray.tasks.images import ImageBatches, image_batches
from fedlora_ray.tasks.weights import is_local, load_error, local_weights_file
from fedlora_ray.timm_import import guard_torchvision_import, import_timm

guard_torchvision_import()  # peft imports transformers, which imports torchvision when installed

VIT_B16 = "vit_base_patch16_224"
DEFAULT_TAG = "augreg2_in21k_ft_in1k"  # timm's default weights of vit_base_patch16_224
DEFAULT_HUB_ID = f"timm/{VIT_B16}.{DEFAULT_TAG}"
DEFAULT_BLOCKS = (0, 3, 6, 9)  # paper V: LoRA in blocks 0, 3, 6 and 9
# the test model: ViT-B's depth (so model.lora_blocks means the same), 32 wide, 32 x 32 input
TINY: dict[str, Any] = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 12, "num_heads": 2}
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN / _STD
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- the model -----------------------------------------------------------------------------
class VisionClassifier(nn.Module):
    """Encoder (a peft model around a headless timm ViT: images -> class-token feature) ->
    linear head. Its inputs are the float images ``ImageBatches`` makes."""

    def __init__(self, encoder: nn.Module, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


@functools.lru_cache(maxsize=8)
def _arch_depth(arch: str) -> int:
    """How many blocks timm's ``arch`` has, read from a weightless copy (meta device)."""
    timm = import_timm()
    with torch.device("meta"):
        return len(timm.create_model(arch, pretrained=False, num_classes=0).blocks)


class VitFamily(ModelFamily):
    """``tiny``: the random test model; otherwise timm's ``arch`` with ``model.weights``."""

    modality = "image"
    targets_field = "model.lora_blocks"

    def __init__(self, arch: str = VIT_B16, tiny: bool = False) -> None:
        self.arch = arch
        self.tiny = tiny

    # --- names -------------------------------------------------------------------------------
    def _depth(self) -> int:
        return int(TINY["depth"]) if self.tiny else _arch_depth(self.arch)

    def lora_targets(self, cfg: ModelConfig) -> tuple[str, ...]:
        """``blocks.{i}.attn.qkv`` for each i of ``model.lora_blocks`` (0, 3, 6, 9 when empty),
        then the ``proj``s when ``model.lora_on_proj``: full names, which peft matches exactly."""
        blocks = tuple(cfg.lora_blocks) or DEFAULT_BLOCKS
        if len(set(blocks)) != len(blocks):
            raise ConfigError(f"config field 'model.lora_blocks' = {list(blocks)}: repeats a block")
        depth = self._depth()
        for i, b in enumerate(blocks):
            if not 0 <= b < depth:
                raise ConfigError(
                    f"config field 'model.lora_blocks[{i}]' = {b}: the {cfg.name!r} base model has "
                    f"blocks 0 to {depth - 1}"
                )
        names = [f"blocks.{b}.attn.qkv" for b in blocks]
        if cfg.lora_on_proj:
            names += [f"blocks.{b}.attn.proj" for b in blocks]
        return tuple(names)

    def hub_id(self, cfg: ModelConfig) -> str:
        if self.tiny:
            return "tiny-vit-d{embed_dim}-l{depth}-p{patch_size}-i{img_size}".format(**TINY)
        if not cfg.weights:
            return f"timm/{self.arch}-random-init"
        if is_local(cfg.weights):
            return DEFAULT_HUB_ID if self.arch == VIT_B16 else f"timm/{self.arch}"
        return cfg.weights.removeprefix("hf-hub:")

    # --- where the weights come from ---------------------------------------------------------
    def _source(self, cfg: ModelConfig) -> tuple[str, str]:
        """("random", ""), ("file", path) or ("hub", id); refuses what cannot load, before any
        model is built."""
        if self.tiny:
            return "random", ""
        if not cfg.weights:
            if cfg.allow_random_init:
                return "random", ""
            raise ConfigError(
                f"config field 'model.weights' = '': the {cfg.name!r} model needs pretrained weights "
                f"(a local .safetensors/.pth/.bin state dict of timm's {self.arch}, a folder holding "
                f"one, or a hub id such as {DEFAULT_HUB_ID!r} where the machine has internet); "
                "model.allow_random_init = false, set it to true to build with random weights "
                "(speed benchmarks only)"
            )
        if is_local(cfg.weights):
            return "file", local_weights_file(cfg)
        return "hub", cfg.weights.removeprefix("hf-hub:")

    def _mean_std(self, cfg: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The normalisation the weights were trained with: timm's pretrained config of the hub
        id's tag (``timm/<arch>.<tag>``) or of the default tag, or a folder's ``config.json``
        when it says; ImageNet's for the tiny model."""
        if self.tiny:
            return IMAGENET_MEAN, IMAGENET_STD
        if cfg.weights and is_local(cfg.weights) and Path(cfg.weights).expanduser().is_dir():
            config = Path(cfg.weights).expanduser() / "config.json"
            if config.is_file():
                pretrained = json.loads(config.read_text()).get("pretrained_cfg", {})
                if "mean" in pretrained and "std" in pretrained:
                    return tuple(pretrained["mean"]), tuple(pretrained["std"])
        import_timm()
        from timm.models import get_pretrained_cfg

        tag = DEFAULT_TAG if self.arch == VIT_B16 else ""
        hub = cfg.weights.removeprefix("hf-hub:") if cfg.weights and not is_local(cfg.weights) else ""
        if hub.startswith(f"timm/{self.arch}."):
            tag = hub.split(".", 1)[1]
        pcfg = get_pretrained_cfg(f"{self.arch}.{tag}" if tag else self.arch)
        if pcfg is None:
            return IMAGENET_MEAN, IMAGENET_STD
        return tuple(pcfg.mean), tuple(pcfg.std)

    def image_size(self, cfg: ModelConfig) -> int:
        """The model's input size: ``model.image_size``, else the architecture's own."""
        if cfg.image_size:
            return int(cfg.image_size)
        if self.tiny:
            return int(TINY["img_size"])
        import_timm()
        from timm.models import get_pretrained_cfg

        pcfg = get_pretrained_cfg(self.arch)
        return int(pcfg.input_size[-1]) if pcfg is not None else 224

    def _create(self, cfg: ModelConfig, overlay: dict[str, Any] | None) -> nn.Module:
        """The headless timm ViT (``num_classes=0``: the forward returns the class-token
        feature); pretrained from timm's ``pretrained_cfg_overlay`` when given."""
        timm = import_timm()
        size = self.image_size(cfg)
        if self.tiny:
            from timm.models.vision_transformer import VisionTransformer

            return VisionTransformer(**{**TINY, "img_size": size}, num_classes=0)
        if overlay is None:
            return timm.create_model(self.arch, pretrained=False, num_classes=0, img_size=size)  # type: ignore[no-any-return]
        return timm.create_model(  # type: ignore[no-any-return]
            self.arch,
            pretrained=True,
            num_classes=0,
            img_size=size,
            pretrained_cfg_overlay=overlay,
        )

    def build_encoder(self, cfg: ModelConfig, seed: int) -> nn.Module:
        """The frozen headless base; a random one is a pure function of ``seed``."""
        origin, where = self._source(cfg)  # first: a refused config builds nothing
        torch.manual_seed(seed)
        if origin == "random":
            return self._create(cfg, None)
        overlay = {"file": where} if origin == "file" else {"hf_hub_id": where, "source": "hf-hub"}
        try:
            return self._create(cfg, overlay)
        except (OSError, RuntimeError, ValueError, KeyError, EOFError, SafetensorError) as err:
            raise load_error(cfg, origin, where, self.arch, err) from None

    # --- the family's interface --------------------------------------------------------------
    def build(self, cfg: ModelConfig, num_labels: int, seed: int) -> nn.Module:
        """As ``fedlora_ray.lora.model.build_model``: base seeded with ``seed``, LoRA on
        ``lora_targets(cfg)`` and the head seeded with ``seed + 1``; only LoRA (and the head
        when ``train_head``) require grad."""
        from fedlora_ray.lora.model import frozen_but_adapter, with_lora

        targets = self.lora_targets(cfg)
        encoder = self.build_encoder(cfg, seed)
        hidden = int(encoder.num_features)  # type: ignore[arg-type]
        peft_encoder = with_lora(encoder, cfg, targets, seed)
        return frozen_but_adapter(VisionClassifier(peft_encoder, hidden, num_labels), cfg)

    def prepare(self, cfg: ModelConfig, split: Split, device: torch.device | None = None) -> ImageBatches:
        return image_batches(split, self.image_size(cfg), *self._mean_std(cfg))

    def linear_modules(self, cfg: ModelConfig) -> dict[str, tuple[int, int]]:
        """Every linear module of the headless base, read from a weightless copy on the meta
        device; checks ``model.weights`` first, so a run that could not load stops here."""
        self._source(cfg)
        import_timm()
        with torch.device("meta"):
            encoder = self._create(cfg, None)
        return {
            name: (m.out_features, m.in_features)
            for name, m in encoder.named_modules()
            if isinstance(m, nn.Linear)
        }
