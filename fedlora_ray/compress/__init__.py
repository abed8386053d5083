"""Uplink sparsifiers behind one interface: SOFT (paper III) and the baselines of paper V.

Each acts on a client's error-compensated update of one module, laid out as the flat vector
[vec(U_B); vec(U_A)] (B is d x r and A is r x k, both row-major), and picks the positions to send.
``COMPRESSORS`` maps ``compression.method`` to a light entry (``CompressorSpec``: dense or not,
its own config rules, how to build it); ``register_compressor`` adds one.

Importing the package registers the built-in methods (``methods``) without torch: config
checks and the controllers read the entries alone. The payload types and the functions that
compute on tensors (``Compressed``, ``ModulePayload``, ``apply_payload``, ``compensate``,
``residual``) are imported from ``compress.base`` and ``compress.error_feedback`` when first
used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedlora_ray.compress import methods  # noqa: F401  (registers the built-in methods)
from fedlora_ray.compress.bits import module_budget
from fedlora_ray.compress.registry import (
    COMPRESSORS,
    CompressorSpec,
    compressor,
    compressor_spec,
    register_compressor,
    upload_model,
)

if TYPE_CHECKING:
    from fedlora_ray.compress.base import Compressed, ModulePayload, apply_payload
    from fedlora_ray.compress.error_feedback import compensate, residual

__all__ = [
    "COMPRESSORS", "Compressed", "CompressorSpec", "ModulePayload", "apply_payload", "compensate",
    "compressor", "compressor_spec", "module_budget", "register_compressor", "residual", "upload_model",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    # torch loads with these, so only where a payload is made or applied, not with the registry
    if name in ("Compressed", "ModulePayload", "apply_payload"):
        from fedlora_ray.compress import base

        return getattr(base, name)
    if name in ("compensate", "residual"):
        from fedlora_ray.compress import error_feedback

        return getattr(error_feedback, name)
    raise AttributeError(f"module 'fedlora_ray.compress' has no attribute {name!r}")
