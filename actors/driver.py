"""DriverActor: holds the run state and drives the rounds; restartable from its checkpoint.

When Ray restarts a killed DriverActor (``runtime.driver_restarts``), the constructor runs again
with the same arguments: it finds the run directory it had started and resumes from its newest
checkpoint, and Ray retries the pending ``run`` call on it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import ray

from actors.backend import Pool, RayBackend
from fedlora_ray.algorithm.mirror import stage
from fedlora_ray.algorithm.run import FederatedRun, resume_config
from fedlora_ray.config import RunConfig


@ray.remote(num_cpus=0)
class DriverActor:
    def __init__(self, cfg: RunConfig, run_dir: str | None, resume: bool, pool: Pool) -> None:
        """``cfg``: the run's config (with ``resume``, the run directory's own, read once by the
        launcher); ``pool``: the client-actor pool the launcher chose and reserved."""
        # a URI's folder is pulled into a local staging copy and pushed back after every round
        local, push = stage(run_dir)
        if not resume and local is not None and (Path(local) / "config.json").is_file():
            # Ray restarted this driver after it had started the run: the folder's config (which
            # holds what preparing it fixed, such as TSFA's rank) is the run's now
            resume = True
            cfg = resume_config(local, [f"federation.rounds={cfg.federation.rounds}"])
        backend = functools.partial(RayBackend, pool=pool)
        self.federated = FederatedRun(cfg, backend, local, callbacks=push, resume=resume)

    def describe(self) -> list[dict[str, Any]]:
        return self.federated.backend.describe()

    def run(self) -> dict[str, Any]:
        try:
            return self.federated.run()
        finally:
            self.federated.backend.close()
