"""Uplink sparsifiers behind one interface: SOFT (seed III) and the baselines of seed V.

Each acts on a client's error-compensated update of one module, laid out as the flat vector
[vec(U_B); vec(U_A)] (B is d x r and A is r x k, both row-major), and picks the positions to send.
"""

from fedlora_ray.compress.base import Compressed, ModulePayload, apply_payload, compress_update, module_budget
from fedlora_ray.compress.error_feedback import compensate, residual

__all__ = [
    "Compressed", "ModulePayload", "apply_payload", "compensate", "compress_update",
    "module_budget", "residual",
]  # fmt: skip
