"""ClientActor: one resident base model per actor; trains a batch of clients per call."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import ray

from fedlora_ray.config import ConfigError, RunConfig

if TYPE_CHECKING:  # torch loads in the actor's own process only, not where actors are created
    import torch

    from fedlora_ray.algorithm.messages import ClientReply, ClientTask
    from fedlora_ray.lora.adapter import Adapter
    from fedlora_ray.train import EvalResult


def assigned_device(num_gpus: float) -> tuple[torch.device, str]:
    """The device Ray gave this actor: Ray sets CUDA_VISIBLE_DEVICES to its GPU, so it is
    cuda:0 here. With a GPU share but no usable CUDA (faked GPU resources) it falls back to CPU
    and says so."""
    import torch

    gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        return torch.device("cpu"), "no GPU assigned"
    if not torch.cuda.is_available():
        return torch.device("cpu"), f"GPU {gpu_ids} assigned but CUDA unavailable: using CPU"
    # Ray does not enforce fractional GPUs; cap this process's share so neighbours never OOM.
    torch.cuda.set_per_process_memory_fraction(min(1.0, num_gpus), 0)
    return torch.device("cuda", 0), f"GPU {gpu_ids}"


@ray.remote
class ClientActor:
    def __init__(self, cfg: RunConfig, actor_id: str) -> None:
        import torch

        from fedlora_ray.engine.trainer import ClientTrainer

        torch.set_num_threads(cfg.runtime.torch_threads)
        device, self._device_note = assigned_device(cfg.runtime.num_gpus_per_actor)
        try:
            self.trainer = ClientTrainer(cfg, device, actor_id)
        except ConfigError as err:
            # kept for the first call: an error of the constructor reaches the caller only as
            # "the actor died", while a method's error arrives as itself, field and value named
            self._refused: ConfigError | None = err
        else:
            self._refused = None

    def info(self) -> dict[str, Any]:
        if self._refused is not None:
            raise self._refused
        return {
            **self.trainer.describe(),
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "device_note": self._device_note,
        }

    def initial_adapter(self) -> Adapter:
        return self.trainer.initial_adapter()

    def adapter_config_json(self) -> str:
        return self.trainer.adapter_config_json()

    def train_passes(self, global_adapter: Adapter, passes: list[list[ClientTask]]) -> list[ClientReply]:
        return self.trainer.train_passes(global_adapter, passes)

    def evaluate(self, global_adapter: Adapter, part: int, parts: int) -> EvalResult:
        return self.trainer.evaluate(global_adapter, part, parts)

    def generate(self, global_adapter: Adapter, part: int, parts: int) -> list[dict[str, Any]]:
        return self.trainer.generate(global_adapter, part, parts)
