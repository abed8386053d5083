"""RayBackend: the Backend protocol over a pool of ClientActors."""

from __future__ import annotations

from typing import Any

import ray

from actors.client import ClientActor
from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.algorithm.schedule import balance
from fedlora_ray.config import RunConfig
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.train import EvalResult


class RayBackend:
    def __init__(self, cfg: RunConfig) -> None:
        rt = cfg.runtime
        options = {
            "num_cpus": rt.num_cpus_per_actor,
            "num_gpus": rt.num_gpus_per_actor,
            # Actors keep nothing between calls but the base model, so a restarted actor
            # retries a batch with the same numbers.
            "max_restarts": 2,
            "max_task_retries": 2,
        }
        self.actors = [ClientActor.options(**options).remote(cfg, f"actor-{i}") for i in range(rt.num_actors)]  # type: ignore[attr-defined]
        ray.get([a.info.remote() for a in self.actors])  # wait until every actor is built

    def describe(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def initial_adapter(self) -> Adapter:
        return ray.get(self.actors[0].initial_adapter.remote())

    def train(self, global_adapter: Adapter, tasks: list[ClientTask]) -> list[ClientReply]:
        ref = ray.put(global_adapter)  # once per round, shared by every actor on the node
        bins = balance([len(t.indices) for t in tasks], len(self.actors))
        futures = [
            actor.train.remote(ref, [tasks[i] for i in chosen])
            for actor, chosen in zip(self.actors, bins)
            if chosen
        ]
        return [reply for batch in ray.get(futures) for reply in batch]

    def evaluate(self, global_adapter: Adapter) -> EvalResult:
        ref = ray.put(global_adapter)
        n = len(self.actors)
        return EvalResult.combine(ray.get([a.evaluate.remote(ref, i, n) for i, a in enumerate(self.actors)]))

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
