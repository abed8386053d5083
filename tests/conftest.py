"""Shared fixtures: tiny configs, and ONE local Ray cluster for the whole suite.

The cluster is started with `ray start --head` on 127.0.0.1 (so `ray job submit` can reach it)
with two fake GPUs, which lets fractional-GPU scheduling be tested on a CPU machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.update(
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    RAY_USAGE_STATS_ENABLED="0",
    RAY_AUTH_MODE="disabled",
    HF_HUB_OFFLINE="1",
)

from fedlora_ray.components import load_run_config  # noqa: E402
from fedlora_ray.config import RunConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.name=tiny",
    "model.lora_rank=4",
    "model.lora_alpha=8",
    "data.per_class_cap=40",
    "data.test_per_class=10",
    "federation.num_clients=6",
    "federation.clients_per_round=3",
    "federation.rounds=2",
    "federation.batch_size=8",
    "federation.lr=0.005",
    "runtime.backend=serial",
    "runtime.torch_threads=1",
    "runtime.progress=false",
]


def _timm_importable() -> bool:
    from fedlora_ray.timm_import import import_timm

    try:
        import_timm()
    except ImportError:
        return False
    return True


# timm (and the torchvision it brings) come with the optional `vision` extra
needs_timm = pytest.mark.skipif(
    not _timm_importable(), reason="timm is not installed (pip install .[vision])"
)


def tiny_config(*overrides: str) -> RunConfig:
    """A config on the tiny random model that trains a round in well under a second, checked as a
    run's config is (the composition root's ``load_run_config``)."""
    return load_run_config(None, [*TINY, *overrides])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, str]]:
    """`ray start --head --block` on 127.0.0.1 with 4 CPUs and 2 fake GPUs, in its own process
    group, so that stopping it never touches another Ray cluster on the machine (as the global
    `ray stop` would)."""
    temp = tempfile.mkdtemp(prefix="fr-", dir="/tmp")  # short: Ray's socket paths are limited
    port, dash = free_port(), free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    head = subprocess.Popen(
        [
            ray_bin(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=4",
            "--num-gpus=2", f"--temp-dir={temp}", "--include-dashboard=true", "--disable-usage-stats",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    info = {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "env_path": env["PATH"]}

    def dashboard_up() -> bool:
        try:
            with urllib.request.urlopen(f"{info['dashboard']}/api/version", timeout=2) as r:
                return r.status == 200
        except OSError:
            return head.poll() is not None  # stop waiting if the head died

    try:
        if not wait_for(dashboard_up, timeout=120) or head.poll() is not None:
            raise RuntimeError("the test Ray head did not start")
        yield info
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)  # ray start --block stops its own processes
        try:
            head.wait(timeout=10)  # a throw-away cluster: no need to wait for a graceful stop
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(ray_cluster: dict[str, str]) -> Iterator[dict[str, str]]:
    """This process connected to the shared cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster["address"], log_to_driver=False)
    yield ray_cluster


def wait_for(predicate, timeout: float = 60.0, step: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False
