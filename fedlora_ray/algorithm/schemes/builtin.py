"""Registers the built-in schemes: importing this module fills ``SCHEMES``."""

from fedlora_ray.algorithm.schemes import fedavg, ffa, fslora, hetlora  # noqa: F401
