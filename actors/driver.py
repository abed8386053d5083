"""DriverActor: holds the run state and drives the rounds; restartable from its checkpoint.

When Ray restarts a killed DriverActor (``runtime.driver_restarts``), the constructor runs again
with the same arguments: it finds the run directory it had started and resumes from its newest
checkpoint, and Ray retries the pending ``run`` call on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from actors.backend import RayBackend
from fedlora_ray.algorithm.mirror import stage
from fedlora_ray.algorithm.run import FederatedRun, resume_config
from fedlora_ray.config import RunConfig


@ray.remote(num_cpus=0)
class DriverActor:
    def __init__(self, cfg: RunConfig, run_dir: str | None, resume: bool = False) -> None:
        # a run directory with a config in it is one this driver (or an earlier one) started;
        # a URI's folder is pulled into a local staging copy and pushed back after every round
        local, push = stage(run_dir)
        resume = resume or (local is not None and (Path(local) / "config.json").is_file())
        if resume:
            assert local is not None
            cfg = resume_config(local, [f"federation.rounds={cfg.federation.rounds}"])
        self.federated = FederatedRun(cfg, RayBackend, local, callbacks=push, resume=resume)

    def describe(self) -> list[dict[str, Any]]:
        return self.federated.backend.describe()

    def run(self) -> dict[str, Any]:
        try:
            return self.federated.run()
        finally:
            self.federated.backend.close()
