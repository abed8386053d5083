"""Uplink control, one module per ``controller.kind``: equal, fixed, osfa, tsfa (offline rank +
Lyapunov online stage), finish and adaptive. ``CONTROLLERS`` maps each name to its class."""

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
