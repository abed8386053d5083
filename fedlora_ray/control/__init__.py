"""Uplink control: TSFA (offline rank + Lyapunov online stage), OSFA, fixed and equal."""

from fedlora_ray.control.controller import RoundPlan, UplinkController, resolve_rank

__all__ = ["RoundPlan", "UplinkController", "resolve_rank"]
