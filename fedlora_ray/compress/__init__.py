"""Uplink sparsifiers behind one interface: SOFT (paper III) and the baselines of paper V.

Each acts on a client's error-compensated update of one module, laid out as the flat vector
[vec(U_B); vec(U_A)] (B is d x r and A is r x k, both row-major), and picks the positions to send.
``COMPRESSORS`` maps ``compression.method`` to its compressor; ``register_compressor`` adds one.
"""

from fedlora_ray.compress.base import (
    COMPRESSORS,
    Compressed,
    ModulePayload,
    apply_payload,
    compressor,
    register_compressor,
)
from fedlora_ray.compress.bits import module_budget
from fedlora_ray.compress.error_feedback import compensate, residual

__all__ = [
    "COMPRESSORS", "Compressed", "ModulePayload", "apply_payload", "compensate",
    "compressor", "module_budget", "register_compressor", "residual",
]  # fmt: skip
