"""SerialBackend: the whole run in one process, the reference the Ray backend must match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedlora_ray.algorithm.client import ClientTrainer
from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.algorithm.server import FederatedRun
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.control import resolve_rank
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.train import EvalResult


class SerialBackend:
    def __init__(self, cfg: RunConfig) -> None:
        torch.set_num_threads(cfg.runtime.torch_threads)
        device = cfg.runtime.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("config field 'runtime.device' = 'cuda': CUDA is not available here")
        self.trainer = ClientTrainer(cfg, device, actor_id="serial")

    def initial_adapter(self) -> Adapter:
        return self.trainer.initial_adapter()

    def train(self, global_adapter: Adapter, tasks: list[ClientTask]) -> list[ClientReply]:
        return self.trainer.train(global_adapter, tasks)

    def evaluate(self, global_adapter: Adapter) -> EvalResult:
        return self.trainer.evaluate(global_adapter)

    def describe(self) -> list[dict[str, Any]]:
        return [self.trainer.describe()]

    def close(self) -> None:
        pass


def run_serial(cfg: RunConfig, run_dir: str | Path | None) -> dict[str, Any]:
    cfg = resolve_rank(cfg, run_dir)  # TSFA's offline stage picks the rank before any model is built
    backend = SerialBackend(cfg)
    try:
        return FederatedRun(cfg, backend, run_dir).run()
    finally:
        backend.close()
