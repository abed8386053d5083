"""The execution-backend protocol: the round logic never knows where clients run."""

from __future__ import annotations

from typing import Any, Protocol

from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.train import EvalResult


class Backend(Protocol):
    def initial_adapter(self) -> Adapter:
        """The seeded initial global adapter (the same in every process)."""
        ...

    def adapter_config_json(self) -> str:
        """peft's adapter_config.json for the workers' model, made where peft is loaded (the
        driver saves the adapter without importing it)."""
        ...

    def train(self, global_adapter: Adapter, tasks: list[ClientTask]) -> list[ClientReply]:
        """Run the tasks' local updates from ``global_adapter``; replies in any order."""
        ...

    def evaluate(self, global_adapter: Adapter) -> EvalResult:
        """Loss and accuracy of ``global_adapter`` on the whole test split."""
        ...

    def generate(self, global_adapter: Adapter) -> list[dict[str, Any]]:
        """Greedy answers of ``global_adapter`` to the first ``federation.generations`` held-out
        prompts, in prompt order ([] for a classifier)."""
        ...

    def describe(self) -> list[dict[str, Any]]:
        """One entry per worker: its id, device and peak memory (goes into summary.json)."""
        ...

    def pool(self) -> dict[str, Any]:
        """The workers as chosen: backend, actor count and how it was chosen, per-actor shares,
        clients per pass, precision (goes into summary.json)."""
        ...

    def close(self) -> None: ...
