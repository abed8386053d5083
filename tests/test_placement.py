"""A pool that cannot be placed, or a cluster address that does not answer, fails with a message
naming the runtime fields, within a bounded time, before any work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import ray

from actors import launch
from actors.launch import check_placement, check_reachable, choose_pool, run_on_ray
from fedlora_ray.config import ConfigError
from tests.conftest import ROOT, tiny_config, wait_for

pytestmark = pytest.mark.ray


HEADER = """
import json, time
from actors.launch import run_on_ray
from fedlora_ray.config import ConfigError
from tests.conftest import tiny_config
"""
RUN_AND_CATCH = """
    start = time.monotonic()
    try:
        run_on_ray(cfg, run_dir)
        out = {"error": None}
    except ConfigError as err:
        out = {"error": str(err)}
    import ray
    out.update(seconds=time.monotonic() - start, ray_still_up=ray.is_initialized())
    print(json.dumps(out))
"""


def _run_script(setup: str, env: dict[str, str] | None = None, timeout: float = 60) -> dict:
    """Run ``setup`` (which sets cfg and run_dir), then run_on_ray, in a fresh Python (this
    process may hold a Ray connection already); returns what it printed as JSON."""
    script = HEADER + textwrap.dedent(setup) + textwrap.dedent(RUN_AND_CATCH)
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1])


def test_unreachable_address_fails_within_seconds(tmp_path):
    run_dir = tmp_path / "run"
    body = f"""
        cfg = tiny_config("runtime.backend=ray", "runtime.ray_address=127.0.0.1:1")
        run_dir = {str(run_dir)!r}
    """
    out = _run_script(body, timeout=60)
    assert out["error"] is not None, "a dead address connected"
    assert "runtime.ray_address" in out["error"] and "'127.0.0.1:1'" in out["error"]
    assert "connection refused" in out["error"] and "6379" in out["error"]
    assert out["seconds"] < 5, out
    assert not run_dir.exists()


def test_ray_address_env_is_checked_too(tmp_path):
    body = f"""
        cfg = tiny_config("runtime.backend=ray")
        run_dir = {str(tmp_path / "run")!r}
    """
    out = _run_script(body, env={"RAY_ADDRESS": "127.0.0.1:1"}, timeout=60)
    assert out["error"] and out["error"].startswith("RAY_ADDRESS = '127.0.0.1:1'")
    assert "runtime.ray_address" in out["error"]
    assert out["seconds"] < 5, out


def test_pool_too_big_for_a_local_cluster_fails_before_any_work(tmp_path):
    """connect() starts a local cluster; RAY_OVERRIDE_RESOURCES makes it 2 CPUs and no GPUs."""
    run_dir = tmp_path / "run"
    body = f"""
        cfg = tiny_config("runtime.backend=ray", "runtime.num_actors=3", "runtime.num_cpus_per_actor=1")
        run_dir = {str(run_dir)!r}
    """
    env = {"RAY_OVERRIDE_RESOURCES": json.dumps({"CPU": 2, "GPU": 0})}
    out = _run_script(body, env=env, timeout=90)
    err = out["error"]
    assert err is not None, "the pool was placed"
    assert "the pool needs 3 CPUs (runtime.num_actors=3 x runtime.num_cpus_per_actor=1.0)" in err
    assert "the Ray cluster has 2 CPUs" in err
    assert "lower runtime.num_actors or runtime.num_cpus_per_actor" in err
    assert not out["ray_still_up"]  # run_on_ray shut down the cluster it started
    assert not run_dir.exists()  # no work started
    assert out["seconds"] < 45, out  # mostly starting the local Ray; the check takes milliseconds


def test_pool_that_never_fits_an_autoscaling_cluster_times_out(ray_session, tmp_path):
    """The shared cluster is joined by address, so it may autoscale: the pool (8 GPUs; the
    cluster has 2) gets runtime.placement_timeout_s, then a message; the reservation is gone."""
    cfg = tiny_config(
        "runtime.backend=ray", "runtime.num_actors=4", "runtime.num_gpus_per_actor=2",
        "runtime.num_cpus_per_actor=0.5", "runtime.placement_timeout_s=3",
    )  # fmt: skip
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        run_on_ray(cfg, tmp_path / "run")
    seconds = time.monotonic() - start
    err = str(info.value)
    assert 3 <= seconds < 10, seconds
    assert "runtime.placement_timeout_s = 3 s" in err
    assert "8 GPUs (runtime.num_actors=4 x runtime.num_gpus_per_actor=2.0)" in err
    assert "2 GPUs in all" in err and "4 CPUs" in err
    assert not (tmp_path / "run").exists()
    pending = [p for p in ray.util.placement_group_table().values() if p["state"] != "REMOVED"]
    assert not pending, pending
    assert wait_for(lambda: ray.available_resources().get("GPU", 0) == 2, timeout=10)
    print(f"placement timeout after {seconds:.1f} s: {err}")


def test_pool_that_fits_is_reserved_and_released(ray_session):
    cfg = tiny_config("runtime.backend=ray", "runtime.num_actors=4", "runtime.num_gpus_per_actor=0.5",
                      "runtime.num_cpus_per_actor=0.5", "runtime.placement_timeout_s=10")  # fmt: skip
    pg = launch.reserve_pool(cfg)
    try:
        assert pg is not None and pg.bundle_count == 4
    finally:
        ray.util.remove_placement_group(pg)
    assert wait_for(lambda: ray.available_resources().get("GPU", 0) == 2, timeout=10)
    assert launch.reserve_pool(tiny_config("runtime.num_cpus_per_actor=0")) is None  # nothing to reserve


# ------------------------------------------------------- without a cluster: addresses, arithmetic


@pytest.mark.parametrize(
    "address, words",
    [
        ("http://127.0.0.1:8265", "dashboard"),
        ("127.0.0.1", "not a host:port address"),
        ("127.0.0.1:99999", "not a host:port address"),
        ("no-such-host.invalid:6379", "does not resolve|no answer within"),
    ],
)
def test_bad_addresses_are_named(address, words):
    with pytest.raises(ConfigError, match=words) as info:
        check_reachable(address, f"config field 'runtime.ray_address' = {address!r}", 2.0)
    assert "runtime.ray_address" in str(info.value)


def test_reachability_check_is_bounded_and_wants_a_gcs_behind_a_listening_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"ray://127.0.0.1:{port}", "x", 2.0)  # Ray Client: the TCP check only
        start = time.monotonic()
        with pytest.raises(ConfigError, match="no Ray GCS answered within"):
            check_reachable(f"127.0.0.1:{port}", "x", 1.0)  # TCP opens, but no GCS answers there
        assert time.monotonic() - start < 2
    start = time.monotonic()
    with pytest.raises(ConfigError):  # unroutable (TEST-NET-1): a timeout, or unreachable at once
        check_reachable("192.0.2.1:6379", "x", 1.0)
    assert time.monotonic() - start < 3


def _fake_cluster(monkeypatch, nodes: list[dict[str, float]]) -> None:
    total: dict[str, float] = {}
    for node in nodes:
        for k, v in node.items():
            total[k] = total.get(k, 0) + v
    monkeypatch.setattr(launch.ray, "nodes", lambda: [{"Alive": True, "Resources": n} for n in nodes])
    monkeypatch.setattr(launch.ray, "cluster_resources", lambda: total)


def test_per_node_limits(monkeypatch):
    # 3 CPUs in all, but two nodes of 1.5 CPUs hold only two 1-CPU actors
    _fake_cluster(monkeypatch, [{"CPU": 1.5}, {"CPU": 1.5}])
    with pytest.raises(ConfigError, match="hold only 2 such actors"):
        check_placement(tiny_config("runtime.num_actors=3"))
    check_placement(tiny_config("runtime.num_actors=2"))
    # one actor bigger than every node
    _fake_cluster(monkeypatch, [{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}])
    with pytest.raises(ConfigError, match="more than any single node"):
        check_placement(tiny_config("runtime.num_actors=1", "runtime.num_gpus_per_actor=2"))
    # fractional GPU shares pack floor(1 / share) per GPU: 0.4 -> 2 per GPU, 4 in all
    check_placement(tiny_config("runtime.num_actors=4", "runtime.num_gpus_per_actor=0.4"))
    with pytest.raises(ConfigError, match="hold only 4 such actors"):
        check_placement(tiny_config("runtime.num_actors=5", "runtime.num_gpus_per_actor=0.4"))
    # no GPUs at all: the old message
    _fake_cluster(monkeypatch, [{"CPU": 8}])
    with pytest.raises(ConfigError, match="has no GPUs"):
        check_placement(tiny_config("runtime.num_gpus_per_actor=0.5"))


def test_auto_pool_fills_the_gpus_or_the_cpus_but_not_past_the_passes(monkeypatch):
    auto = ("runtime.num_actors=auto", "federation.num_clients=40", "federation.clients_per_round=10")
    gpu_share = ("runtime.num_gpus_per_actor=0.25", "runtime.num_cpus_per_actor=2")
    _fake_cluster(monkeypatch, [{"CPU": 16, "GPU": 1}, {"CPU": 16, "GPU": 1}])
    count, how = choose_pool(tiny_config(*auto, *gpu_share))
    assert count == 8 and how.startswith("auto") and "holds 8 actors of 0.25 GPU" in how  # 4 per GPU
    # 10 clients in passes of 4 make 3 passes: a fourth actor would sit idle
    assert choose_pool(tiny_config(*auto, *gpu_share, "runtime.clients_per_pass=4"))[0] == 3
    # CPUs only: CPU shares (the GPUs are someone else's)
    assert choose_pool(tiny_config(*auto, "runtime.num_cpus_per_actor=3"))[0] == 10  # 5 per node
    assert choose_pool(tiny_config("runtime.num_actors=3"))[1] == "runtime.num_actors"
    _fake_cluster(monkeypatch, [{"CPU": 8}])
    with pytest.raises(ConfigError, match="has no GPUs"):
        choose_pool(tiny_config(*auto, *gpu_share))
    with pytest.raises(ConfigError, match="reserve no resources"):
        choose_pool(tiny_config(*auto, "runtime.num_cpus_per_actor=0"))


def test_an_auto_pool_is_printed_and_written_to_the_summary(ray_session, tmp_path, capsys):
    """The shared cluster has 4 CPUs: a round of 3 clients gets 3 one-CPU actors."""
    cfg = tiny_config("runtime.backend=ray", "runtime.num_actors=auto", "runtime.progress=true")
    summary = run_on_ray(cfg, tmp_path / "run")
    printed = capsys.readouterr().out
    assert "pool: 3 client actors x (1 CPU, 0 GPU), 1 clients per pass, fp32 (auto:" in printed
    pool = json.loads((tmp_path / "run" / "summary.json").read_text())["pool"]
    assert pool == summary["pool"] and pool["num_actors"] == 3 and pool["chosen_by"].startswith("auto")
    assert len(summary["workers"]) == 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["runtime"]["num_actors"] == "auto"
