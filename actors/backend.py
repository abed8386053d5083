"""RayBackend: the Backend protocol over a pool of ClientActors.

Client actors keep nothing between calls but the base model and the data, so when one dies
mid-round its batch is trained again on the next actor of the pool (Ray restarts the dead one)
with the same numbers. The replies say which attempt produced them, and the round logs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.client import ClientActor
from actors.launch import Pool, choose_pool
from fedlora_ray.algorithm.schedule import balance, cut_passes
from fedlora_ray.config import RunConfig

if TYPE_CHECKING:  # the pool is made before the driver loads torch: its actors start meanwhile
    from fedlora_ray.algorithm.messages import ClientReply, ClientTask
    from fedlora_ray.lora.adapter import Adapter
    from fedlora_ray.train import EvalResult

MAX_ATTEMPTS = 3  # a batch whose worker died this many times fails the round


class RayBackend:
    def __init__(self, cfg: RunConfig, pool: Pool | None = None) -> None:
        """``pool``: the launcher's choice; without one (a backend built by hand) the pool is
        chosen here. Actor i takes bundle i of the placement group, so the resources found at
        launch are the ones the actors hold."""
        self.cfg = cfg
        rt = cfg.runtime
        if pool is None:
            pool = Pool(*choose_pool(cfg))
        self.num_actors, self.chosen_by = pool.num_actors, pool.chosen_by
        placement = pool.placement
        options: dict[str, Any] = {
            "num_cpus": rt.num_cpus_per_actor,
            "num_gpus": rt.num_gpus_per_actor,
            "max_restarts": MAX_ATTEMPTS,  # a dead actor comes back; its batches are retried by us
            "max_task_retries": 0,
        }

        def where(i: int) -> dict[str, Any]:
            if placement is None:
                return {}
            return {"scheduling_strategy": PlacementGroupSchedulingStrategy(placement, i)}

        self.actors = [
            ClientActor.options(**options, **where(i)).remote(cfg, f"actor-{i}")  # type: ignore[attr-defined]
            for i in range(self.num_actors)
        ]
        # the actors start now; the first call (initial_adapter) waits until every one is built,
        # so the driver's own start-up work overlaps theirs
        self._ready = [a.info.remote() for a in self.actors]

    def describe(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def pool(self) -> dict[str, Any]:
        rt = self.cfg.runtime
        return {
            "backend": "ray",
            "num_actors": self.num_actors,
            "chosen_by": self.chosen_by,
            "num_cpus_per_actor": rt.num_cpus_per_actor,
            "num_gpus_per_actor": rt.num_gpus_per_actor,
            "clients_per_pass": rt.clients_per_pass,
            "precision": rt.precision,
        }

    def adapter_config_json(self) -> str:
        return ray.get(self.actors[0].adapter_config_json.remote())

    def initial_adapter(self) -> Adapter:
        ray.get(self._ready)  # an actor that failed to build raises here
        return ray.get(self.actors[0].initial_adapter.remote())

    def _run(self, method: str, jobs: list[tuple[int, tuple[Any, ...]]]) -> list[tuple[int, Any]]:
        """Call ``method`` on actor ``i`` with ``args`` for each job, in parallel; a job whose actor
        died goes to the next actor of the pool. Returns (attempt, result) per job, in order."""
        pending = {
            getattr(self.actors[i], method).remote(*args): (j, i, 1) for j, (i, args) in enumerate(jobs)
        }
        out: list[tuple[int, Any]] = [(0, None)] * len(jobs)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                j, i, attempt = pending.pop(ref)
                try:
                    out[j] = (attempt, ray.get(ref))
                except RayActorError as err:
                    if attempt >= MAX_ATTEMPTS:
                        raise RuntimeError(f"{method} failed {attempt} times; last error: {err}") from err
                    nxt = (i + 1) % len(self.actors)
                    pending[getattr(self.actors[nxt], method).remote(*jobs[j][1])] = (j, nxt, attempt + 1)
        return out

    def train(self, global_adapter: Adapter, tasks: list[ClientTask]) -> list[ClientReply]:
        ref = ray.put(global_adapter)  # once per round, shared by every actor on the node
        # the same passes as the serial backend's, whatever the pool: then the same numbers
        sizes = [len(t.indices) for t in tasks]
        passes = cut_passes(sizes, self.cfg.runtime.clients_per_pass)
        bins = balance([sum(sizes[k] for k in p) for p in passes], len(self.actors))
        jobs = [
            (i, (ref, [[tasks[k] for k in passes[j]] for j in chosen]))
            for i, chosen in enumerate(bins)
            if chosen
        ]
        replies = []
        for attempt, batch in self._run("train_passes", jobs):
            for reply in batch:
                reply.attempt = attempt
            replies += batch
        return replies

    def evaluate(self, global_adapter: Adapter) -> EvalResult:
        ref = ray.put(global_adapter)
        n = len(self.actors)
        parts = self._run("evaluate", [(i, (ref, i, n)) for i in range(n)])
        from fedlora_ray.train import EvalResult

        return EvalResult.combine([result for _, result in parts])

    def generate(self, global_adapter: Adapter) -> list[dict[str, Any]]:
        """The held-out prompts' answers, shared over the actors, in prompt order."""
        ref = ray.put(global_adapter)
        n = len(self.actors)
        parts = self._run("generate", [(i, (ref, i, n)) for i in range(n)])
        return sorted((row for _, rows in parts for row in rows), key=lambda row: row["index"])

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
