"""Fixed Parquet schemas and the run directory they are written to."""

from fedlora_ray.logging.run_log import RunLog
from fedlora_ray.logging.schema import CLIENTS_SCHEMA, PROFILE_SCHEMA, ROUNDS_SCHEMA

__all__ = ["CLIENTS_SCHEMA", "PROFILE_SCHEMA", "ROUNDS_SCHEMA", "RunLog"]
