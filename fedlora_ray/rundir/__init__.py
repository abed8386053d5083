"""Fixed Parquet schemas and the run directory they are written to."""

from fedlora_ray.rundir.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fedlora_ray.rundir.run_log import RunLog, read_log
from fedlora_ray.rundir.schema import CLIENTS_SCHEMA, PROFILE_SCHEMA, ROUNDS_SCHEMA
from fedlora_ray.rundir.tensor_file import read_tensor_file, write_tensor_file

__all__ = [
    "CLIENTS_SCHEMA", "PROFILE_SCHEMA", "ROUNDS_SCHEMA", "RunLog", "latest_checkpoint", "load_checkpoint",
    "read_log", "read_tensor_file", "save_checkpoint", "write_tensor_file",
]  # fmt: skip
