"""Images for the vision families: uint8 arrays held once per actor, made into the model's
float input a whole batch at a time on the training device."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedlora_ray.tasks.base import Split


@functools.lru_cache(maxsize=8)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as 1 x 3 x 1 x 1 tensors on ``device``, made once rather than copied to the
    device with every batch."""
    return torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(
        1, 3, 1, 1
    )


@dataclass(frozen=True)
class ImageBatches:
    """uint8 images (N x C x H x W, C = 1 or 3) held once per actor. A batch goes to the device
    as uint8 and becomes the model's float input there: scaled to [0, 1], grey repeated to three
    channels, resized to ``size`` x ``size`` (bilinear, no antialias) and normalised."""

    images: torch.Tensor
    labels: torch.Tensor
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """((images float32 N x 3 x size x size, normalised), labels)."""
        x = self.images[idx].to(device, non_blocking=True).float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False
            )
        mean, std = _channel_stats(self.mean, self.std, device)
        return ((x - mean) / std,), self.labels[idx].to(device, non_blocking=True)

    def eval_order(self) -> torch.Tensor:
        return torch.arange(len(self))


def image_batches(split: Split, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> ImageBatches:
    """``split``'s images as ``ImageBatches``; refuses anything but uint8 N x (1 or 3) x H x W."""
    images = np.asarray(split.examples)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images N x (1 or 3) x H x W, got {images.dtype} {images.shape}")
    return ImageBatches(
        torch.tensor(images),  # one copy per actor: the split's arrays are shared, read-only
        torch.tensor(np.asarray(split.labels), dtype=torch.long),
        size,
        (float(mean[0]), float(mean[1]), float(mean[2])),
        (float(std[0]), float(std[1]), float(std[2])),
    )


@dataclass(frozen=True)
class FeatureBatches:
    """Float feature maps (N x C x H x W) computed once per actor by a frozen part of the model,
    and the labels; a batch is a slice moved to the device."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return (self.features[idx].to(device, non_blocking=True),), self.labels[idx].to(
            device, non_blocking=True
        )

    def eval_order(self) -> torch.Tensor:
        return torch.arange(len(self))
