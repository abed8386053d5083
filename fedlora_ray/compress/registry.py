"""The ``compression.method`` registry: one light entry per method.

A ``CompressorSpec`` holds what the config checks and the controllers need without torch:
whether the method sends every entry, and its own rules on the config; ``build`` makes the
compressor itself (``fedlora_ray.compress.base``), importing torch. The built-in methods are
listed in ``fedlora_ray.compress.methods``; ``register_compressor`` adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedlora_ray.compress.bits import ModuleUpload, nearest_component_upload, whole_component_upload
from fedlora_ray.config import CompressionConfig, RunConfig

if TYPE_CHECKING:
    from fedlora_ray.compress.base import Compressor


@dataclass(frozen=True)
class CompressorSpec:
    """A compression method as the registry holds it. ``dense``: it sends every entry (ILoRA),
    so it needs no error memory and leaves no keep ratio to choose; ``validate``: the method's
    own rules on the config (None: none); ``build``: the compressor, made when a scheme uses it;
    ``pooled``: whether, under this config, one budget spans all modules (FLASC's global scope)
    rather than K_m per module (None: never)."""

    dense: bool
    build: Callable[[], Compressor]
    validate: Callable[[RunConfig], None] | None = None
    pooled: Callable[[CompressionConfig], bool] | None = None

    def pools_budget(self, comp: CompressionConfig) -> bool:
        return self.pooled is not None and self.pooled(comp)


COMPRESSORS: dict[str, CompressorSpec] = {}


def register_compressor(
    name: str, compressor: Compressor, *, validate: Callable[[RunConfig], None] | None = None
) -> Compressor:
    """Make ``compression.method: name`` available; ``validate`` checks the method's own fields
    on every config that names it."""
    COMPRESSORS[name] = CompressorSpec(compressor.dense, lambda: compressor, validate)
    return compressor


def compressor_spec(method: str) -> CompressorSpec:
    return COMPRESSORS[method]


def compressor(method: str) -> Compressor:
    """The compressor of ``compression.method``, ready to compress (torch loads here)."""
    return COMPRESSORS[method].build()


def upload_model(comp: CompressionConfig) -> ModuleUpload:
    """One module's (entries, bits) at a keep ratio, as the configured compressor sends it: the
    compressor's own payload model, with FedLoDrop's whole components counted by
    ``compression.fedlodrop_rounding`` [docs/algorithms.md §3]. The preflight's empty-upload
    check and controller-only mode price uploads with it."""
    model = compressor(comp.method).module_upload
    if model is whole_component_upload and comp.fedlodrop_rounding == "nearest":
        return nearest_component_upload
    return model
