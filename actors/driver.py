"""DriverActor: holds the run state and drives the rounds; restartable from its checkpoint.

When Ray restarts a killed DriverActor (``runtime.driver_restarts``), it retries the pending
``run`` call on the new one, which finds the run directory the first had started and resumes
from its newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from actors.launch import Pool
from fedlora_ray.config import RunConfig
from fedlora_ray.preflight import ClientData, resume_config

if TYPE_CHECKING:
    from fedlora_ray.engine.run import FederatedRun


@ray.remote(num_cpus=0)
class DriverActor:
    def __init__(
        self, cfg: RunConfig, run_dir: str | None, resume: bool, pool: Pool, data: ClientData
    ) -> None:
        """``cfg``: the run's config (with ``resume``, the run directory's own, read once by the
        launcher); ``pool``: the client-actor pool the launcher chose and reserved; ``data``: the
        clients' data the launcher's preflight read and dealt. The run is built in ``run``, so
        that a refusal while building it (a model check) reaches the launcher as a ConfigError."""
        self._args = (cfg, run_dir, resume, pool, data)
        self.federated: FederatedRun | None = None

    def _build(self) -> FederatedRun:
        from actors.backend import RayBackend
        from fedlora_ray.control import controller_class
        from fedlora_ray.storage import Mirror, is_uri

        cfg, run_dir, resume, pool, data = self._args
        # a URI's folder is pulled into a local staging copy and pushed back after every round
        mirror = Mirror(run_dir) if run_dir is not None and is_uri(run_dir) else None
        local = mirror.pull() if mirror is not None else run_dir
        if not resume and local is not None and (Path(local) / "config.json").is_file():
            # Ray restarted this driver after it had started the run: the folder's config (which
            # holds what preparing it fixed, such as TSFA's rank) is the run's now
            resume = True
            cfg = resume_config(local, [f"federation.rounds={cfg.federation.rounds}"])
        if not resume:
            cfg = controller_class(cfg.controller.kind).prepare(cfg, local)  # TSFA's offline rank
        # The client actors start now, on the prepared config, and load torch and the model
        # while this process loads its own torch and the engine below.
        backend = RayBackend(cfg, pool)
        from fedlora_ray.engine.mirror import PushToURI
        from fedlora_ray.engine.run import FederatedRun

        push = [PushToURI(mirror)] if mirror is not None else []
        return FederatedRun(cfg, backend, local, callbacks=push, resume=resume, data=data, prepared=True)

    def run(self) -> dict[str, Any]:
        self.federated = self._build()
        try:
            return self.federated.run()
        finally:
            self.federated.backend.close()
