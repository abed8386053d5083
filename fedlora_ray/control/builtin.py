"""Registers the built-in controllers: importing this module fills ``CONTROLLERS``, in the
order of the imports below, which is the order config errors list them in."""

# isort: off
from fedlora_ray.control import equal, fixed, osfa, tsfa, finish, adaptive_sampling  # noqa: F401
# isort: on
