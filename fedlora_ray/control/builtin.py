"""Registers the built-in controllers: importing this module fills ``CONTROLLERS``."""

from fedlora_ray.control import adaptive_sampling, equal, finish, fixed, osfa, tsfa  # noqa: F401
