"""Connect to (or start) a Ray cluster and run one federated job on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.driver import DriverActor
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.control import resolve_rank


def connect(cfg: RunConfig) -> bool:
    """Join the configured cluster, or RAY_ADDRESS's (set by `ray job submit`), or start a
    local one. Returns True when this call started Ray (and should shut it down)."""
    if ray.is_initialized():
        return False
    address = cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    return True


def check_resources(cfg: RunConfig) -> None:
    """On a local cluster (which never grows), fail before any work when the pool cannot be
    placed: the actors would wait forever. An autoscaling cluster may add GPU nodes later."""
    rt = cfg.runtime
    total = ray.cluster_resources()
    if rt.num_gpus_per_actor > 0 and total.get("GPU", 0) == 0:
        raise ConfigError(
            f"config field 'runtime.num_gpus_per_actor' = {rt.num_gpus_per_actor}: the Ray "
            "cluster has no GPUs; set it to 0 to run on CPUs"
        )


def run_on_ray(cfg: RunConfig, run_dir: str | Path | None) -> dict[str, Any]:
    cfg = resolve_rank(cfg, run_dir)  # TSFA's offline stage picks the rank before any actor builds a model
    started = connect(cfg)
    try:
        if started:
            check_resources(cfg)
        # The driver writes the run directory, so it lives on this (the submitting) node.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        path = str(Path(run_dir).resolve()) if run_dir else None
        driver = DriverActor.options(scheduling_strategy=here).remote(cfg, path)  # type: ignore[attr-defined]
        try:
            return ray.get(driver.run.remote())
        finally:
            ray.kill(driver)
    finally:
        if started:
            ray.shutdown()
