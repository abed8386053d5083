"""DriverActor: holds the global adapter, the client-state store and the round loop."""

from __future__ import annotations

from typing import Any

import ray

from actors.backend import RayBackend
from fedlora_ray.algorithm.server import FederatedRun
from fedlora_ray.config import RunConfig


@ray.remote(num_cpus=0)
class DriverActor:
    def __init__(self, cfg: RunConfig, run_dir: str | None) -> None:
        self.backend = RayBackend(cfg)
        self.federated = FederatedRun(cfg, self.backend, run_dir)

    def describe(self) -> list[dict[str, Any]]:
        return self.backend.describe()

    def run(self) -> dict[str, Any]:
        try:
            return self.federated.run()
        finally:
            self.backend.close()
