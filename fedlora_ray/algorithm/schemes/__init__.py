"""Federated LoRA schemes, one module per ``algorithm.kind``: fedavg (with its uplink
compressors), fslora, hetlora and ffa. ``SCHEMES`` maps each name to its class."""

from fedlora_ray.algorithm.schemes.base import (
    SCHEMES,
    Scheme,
    draw_client_ratios,
    make_scheme,
    register_scheme,
    scheme_class,
)

__all__ = [
    "SCHEMES", "Scheme", "draw_client_ratios", "make_scheme", "register_scheme",
    "scheme_class",
]  # fmt: skip
