"""A job on a two-node Ray cluster: client actors on both nodes, the serial backend's numbers.

The test starts its own cluster, a head and a second node (`ray start --block`, each in its own
process group), and runs the job through the `fedlora-ray` command in a subprocess, since this
pytest process may already be connected to the suite's shared cluster. Each node holds one CPU
and each client actor reserves one, so the two actors must land on different nodes (the driver
actor reserves none).

Why not on 127.0.0.1 like the shared cluster: on Linux, Ray 2.60's `ray start --address` refuses
to join a cluster while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the suite's setting), and with it
set to 1 every `ray start` turns 127.0.0.1 (as --node-ip-address or in --address) into this
machine's own address. So these nodes, and the job's driver, run with it set to 1, on the
address Ray finds for this machine; the head's GCS then listens on all interfaces while the test
runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from fedlora_ray.components import load_run_config
from fedlora_ray.engine.serial import run_serial
from tests.conftest import ROOT, TINY, free_port, ray_bin, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent
# 3 rounds of 2 clients out of 6, one client per pass: each round is two passes, one per actor.
# SOFT with error feedback, so per-client state goes to and comes back from actors on either node.
JOB = [
    *TINY,
    "federation.rounds=3",
    "federation.clients_per_round=2",
    "compression.method=soft",
    "compression.keep_ratio=0.2",
    "runtime.clients_per_pass=1",
]
# Wall-clock columns (named *_seconds in the log schema), which actor trained a client and the
# run's id differ between the runs; every other column must be equal, bit for bit.
NOT_COMPARED = {"actor_id", "run_id"}
ROLES = {"multinode_head": "head", "multinode_second": "second"}  # custom resource -> node role

# ray.nodes() from a separate driver (this process must not ray.init: it may be on the shared
# cluster), polled until COUNT nodes are alive or TIMEOUT seconds have passed
_ALIVE_NODES = """
import json, sys, time, ray
address, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, log_to_driver=False)
end = time.monotonic() + timeout
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= count or time.monotonic() > end:
        break
    time.sleep(0.5)
print(json.dumps({n["NodeID"]: {"ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in alive}))
"""


@dataclass
class TwoNodes:
    """The two `ray start` processes of a test cluster, and where their output goes."""

    port: int  # the head's GCS port
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    polls: list[subprocess.Popen] = field(default_factory=list)  # ray.nodes() drivers, ended at exit

    def died(self) -> str:
        """'' while every `ray start` runs, else which one exited and the end of its output."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text()[-2000:]
                return f"the {name} node's `ray start` exited with {proc.returncode}:\n{tail}"
        return ""

    def count_nodes(self, count: int, timeout: float = 90) -> subprocess.Popen:
        """Start polling ray.nodes() in a subprocess until ``count`` nodes are alive (or
        ``timeout`` s have passed); ``alive_nodes`` reads its answer, so the test can work meanwhile."""
        out, err = (self.logs / "alive_nodes.json").open("w"), (self.logs / "alive_nodes.err").open("w")
        with out, err:
            poll = subprocess.Popen(
                [sys.executable, "-c", _ALIVE_NODES, f"127.0.0.1:{self.port}", str(count), str(timeout)],
                env=self.env, stdout=out, stderr=err,
            )  # fmt: skip
        self.polls.append(poll)
        return poll

    def alive_nodes(self, poll: subprocess.Popen, timeout: float = 150) -> dict[str, dict]:
        """Node id -> {"ip", "resources"} of the alive nodes, as ``poll`` (from ``count_nodes``)
        found them; fails at once when a node's `ray start` exits meanwhile."""
        answered = wait_for(lambda: poll.poll() is not None or bool(self.died()), timeout)
        assert not self.died(), self.died()
        assert answered, f"no answer from ray.nodes() within {timeout:g} s"
        assert poll.returncode == 0, (self.logs / "alive_nodes.err").read_text()[-3000:]
        return json.loads((self.logs / "alive_nodes.json").read_text().strip().splitlines()[-1])


def _gcs_answers(port: int, head: subprocess.Popen) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return head.poll() is not None  # stop waiting if the head died


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop `ray start --block` processes and everything they started (their process groups).
    SIGTERM first; a head drains for up to 30 s on it, which a throw-away cluster need not wait
    for, so whatever still runs after 2 s gets SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    wait_for(lambda: all(p.poll() is not None for p in procs), timeout=2, step=0.2)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):  # raised once the whole group has exited
            os.killpg(proc.pid, signal.SIGKILL)  # the group's other processes too
        proc.wait()


@contextmanager
def two_node_cluster(env: dict[str, str], logs: Path) -> Iterator[TwoNodes]:
    """A head and a second node, one CPU and one custom resource (its role) each. Returns once
    the second node has been started (it joins a little later). Each node's output goes to
    ``logs``; both are stopped on the way out, whatever happened."""
    temp = tempfile.mkdtemp(prefix="fm-", dir="/tmp")  # short: Ray's socket paths are limited
    cluster = TwoNodes(free_port(), env, logs)
    common = ["--block", "--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000",
              "--disable-usage-stats"]  # fmt: skip

    def start(name: str, resource: str, *args: str) -> subprocess.Popen:
        # two nodes on one host: their dashboard agents need distinct ports (the default is fixed)
        agent = f"--dashboard-agent-listen-port={free_port()}"
        with (logs / f"{name}.log").open("w") as log:
            cluster.procs[name] = subprocess.Popen(
                [ray_bin(), "start", *common, agent, f"--resources={json.dumps({resource: 1})}", *args],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return cluster.procs[name]

    try:
        head = start(
            "head", "multinode_head", "--head", f"--port={cluster.port}", f"--temp-dir={temp}",
            "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
        )  # fmt: skip
        if not wait_for(lambda: _gcs_answers(cluster.port, head), timeout=60) or head.poll() is not None:
            raise RuntimeError(f"the test Ray head did not start: {cluster.died()}")
        start("second", "multinode_second", f"--address=127.0.0.1:{cluster.port}")
        yield cluster
    finally:
        for poll in cluster.polls:
            if poll.poll() is None:
                poll.kill()
            poll.wait()
        _stop(list(cluster.procs.values()))
        shutil.rmtree(temp, ignore_errors=True)


def _table(run_dir: Path, name: str) -> pd.DataFrame:
    """A log (a file or a folder of parts) without the columns that differ between runs."""
    frame = pd.read_parquet(run_dir / f"{name}.parquet")
    return frame.drop(columns=[c for c in frame if c in NOT_COMPARED or c.endswith("_seconds")])


def test_actors_on_two_nodes_give_the_serial_numbers(tmp_path):
    config = tmp_path / "multinode.yaml"
    config.write_text("name: multinode\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PATH=f"{BIN}:{env['PATH']}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")  # see the docstring
    with two_node_cluster(env, tmp_path) as cluster:
        poll = cluster.count_nodes(2)
        run_serial(load_run_config(config, JOB), tmp_path / "serial")  # while the second node joins
        nodes = cluster.alive_nodes(poll)
        role = {node: ROLES[r] for node, info in nodes.items() for r in info["resources"] if r in ROLES}
        assert sorted(role.values()) == ["head", "second"], nodes
        head_ip = next(info["ip"] for node, info in nodes.items() if role[node] == "head")
        ray_job = [
            "runtime.backend=ray", f"runtime.ray_address={head_ip}:{cluster.port}", "runtime.num_actors=2",
            "runtime.num_cpus_per_actor=1", "runtime.placement_timeout_s=60",
        ]  # fmt: skip
        proc = subprocess.run(
            [str(BIN / "fedlora-ray"), "run", str(config), "--out", str(tmp_path / "ray"),
             *(f"--set={o}" for o in [*JOB, *ray_job])],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + cluster.died()

    # one client actor on each node, and both trained clients
    workers = json.loads((tmp_path / "ray" / "summary.json").read_text())["workers"]
    node_of = {w["actor_id"]: w["node_id"] for w in workers}
    assert sorted(role[node] for node in node_of.values()) == ["head", "second"], workers
    trained_by = pd.read_parquet(tmp_path / "ray" / "clients.parquet")["actor_id"]
    assert {role[node_of[actor]] for actor in trained_by} == {"head", "second"}

    # the serial backend's numbers, bit for bit: every round, client and client-profile column
    for name in ("rounds", "clients", "profile"):
        ref, got = _table(tmp_path / "serial", name), _table(tmp_path / "ray", name)
        assert list(got.columns) == list(ref.columns)
        pd.testing.assert_frame_equal(got, ref, check_exact=True, obj=f"{name}.parquet")
    clients = pd.read_parquet(tmp_path / "serial" / "clients.parquet")
    assert clients["client_id"].duplicated().any()  # some client came back, with its residual
    saved = sorted(f.name for f in (tmp_path / "serial" / "adapter").glob("*.safetensors"))
    assert "adapter_model.safetensors" in saved
    for file in saved:  # the final LoRA factors (and the trained head, saved beside them)
        ref, got = (load_file(str(tmp_path / run / "adapter" / file)) for run in ("serial", "ray"))
        assert got.keys() == ref.keys()
        assert all((got[k] == ref[k]).all() for k in got), file
