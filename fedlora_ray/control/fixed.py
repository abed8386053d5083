"""fixed: the given rank and keep ratio, bandwidth by the paper's eq. (41) [paper IV-C]."""

from __future__ import annotations

from fedlora_ray.control.base import Controller, register_controller


@register_controller
class Fixed(Controller):
    name = "fixed"
