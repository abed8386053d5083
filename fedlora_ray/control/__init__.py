"""Uplink control, one module per ``controller.kind``: equal, fixed, osfa, tsfa (offline rank +
Lyapunov online stage), finish and adaptive. ``CONTROLLERS`` maps each name to its class.

Importing the package registers the built-in controllers (``builtin``): they import numpy, not
torch, so checking a config may load them."""

from fedlora_ray.control import builtin  # noqa: F401  (registers the built-in controllers)
from fedlora_ray.control.base import (
    CONTROLLERS,
    Controller,
    ControllerState,
    RoundPlan,
    controller_class,
    make_controller,
    register_controller,
)

__all__ = [
    "CONTROLLERS", "Controller", "ControllerState", "RoundPlan", "controller_class", "make_controller",
    "register_controller",
]  # fmt: skip
