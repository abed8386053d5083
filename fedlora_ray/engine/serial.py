"""SerialBackend: the whole run in one process, the reference the Ray backend must match."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.engine.mirror import stage
from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.trainer import ClientTrainer
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.preflight import ClientData, resume_config
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

    def adapter_config_json(self) -> str:
        return self.trainer.adapter_config_json()

    def train(self, global_adapter: Adapter, tasks: list[ClientTask]) -> list[ClientReply]:
        return self.trainer.train(global_adapter, tasks)

    def evaluate(self, global_adapter: Adapter) -> EvalResult:
        return self.trainer.evaluate(global_adapter)

    def generate(self, global_adapter: Adapter) -> list[dict[str, Any]]:
        return self.trainer.generate(global_adapter)

    def describe(self) -> list[dict[str, Any]]:
        return [self.trainer.describe()]

    def pool(self) -> dict[str, Any]:
        rt = self.trainer.cfg.runtime
        return {
            "backend": "serial",
            "num_actors": 1,
            "device": str(self.trainer.device),
            "clients_per_pass": rt.clients_per_pass,
            "precision": rt.precision,
        }

    def close(self) -> None:
        pass


def run_serial(
    cfg: RunConfig, run_dir: str | Path | None, data: ClientData | None = None, resume: bool = False
) -> dict[str, Any]:
    """The whole run in this process; ``run_dir`` may be a path or a URI (fedlora_ray.storage),
    ``data`` the preflight's clients' data (read here when None). With ``resume``, ``cfg`` is the
    run directory's (``resume_config``) and the run continues from its newest checkpoint."""
    local, push = stage(run_dir)  # a URI's folder is pulled once, into a staging copy
    run = FederatedRun(cfg, SerialBackend, local, callbacks=push, resume=resume, data=data)
    try:
        return run.run()
    finally:
        run.backend.close()


def resume_serial(run_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its newest checkpoint (``--set federation.rounds=N``
    extends it)."""
    return run_serial(resume_config(run_dir, overrides), run_dir, resume=True)
