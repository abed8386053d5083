"""Start-up time and peak memory of a whole run, as a user launches it.

For the same 5-round workload (jobs/configs/quickstart.yaml: MiniLM + LoRA on WordNet, 100
clients, 10 a round, with federation.rounds=5, batch_size=8, local_epochs=1, 2 client actors of
1 CPU and 1 torch thread) this launches `.venv/bin/fedlora-ray run ... --out DIR` in a fresh
process and measures

  - time to first round: from just before the process is launched to the moment round 1 is
    committed, read from the modification time of DIR/rounds.parquet when it first appears
    (log.flush_every=1 writes it at the end of every round; the rename keeps the time the file
    was written). The round-1 progress line is also timestamped as it reaches our pipe, as a
    cross-check: with Ray it travels through the log monitor and arrives a little later;
  - peak RSS of the process tree: every 0.2 s, the resident set of the launched process and of
    all its descendants (Ray's gcs_server, raylet, dashboard agents, log monitor, idle workers,
    the driver actor and the client actors) is summed; the largest sum is kept, and so is each
    process's own peak with its command line, to show which processes are heavy. The sum counts
    pages shared between processes (torch's libraries, the object store) once per process, as
    `ps` or a container's accounting per process would;
  - CPU seconds (user + system) of the whole tree until round 1: on a shared machine, other
    load stretches wall time much more than it changes this;
  - for comparison, the serial backend (`--set runtime.backend=serial`): one process, no Ray;
  - ray-warm: the Ray run joining a local cluster started once beforehand (`ray start --head`,
    then `runtime.ray_address`), as a user keeping a cluster warm between runs would; its tree
    counts that cluster's processes with the launched one.

With --baseline DIR (a checkout of the previous commit, e.g. made by `git worktree add`), every
runner is measured on both codes, alternated, in the same session.

Runners are run alternately (ray, serial, ray, serial, ...) so that drift on a shared machine
hits both. Each Ray run starts its own local cluster in a private temporary directory
(RAY_TMPDIR), never joins another (RAY_ADDRESS is unset), and is stopped by the run itself;
whatever of the tree is still alive afterwards is killed here by PID (never `ray stop`).

    python benchmarks/startup_memory.py [--repeats 2] [--out benchmarks/results]
        [--runners ray,ray-warm,serial] [--baseline DIR] [--set a.b=v ...] [--env NAME=VALUE ...]
        [--source DIR] [--pss]

--set and --env apply to every runner (to try e.g. MALLOC_ARENA_MAX=2); --source runs the code of
another copy of the repository (a scratch copy holding a candidate change): it becomes the working
directory and PYTHONPATH, since Ray workers put the driver's working directory first on their
path; --pss adds one snapshot of each process's proportional and unique set size (PSS, USS) when
round 1 is seen. Printed, and written to OUT/startup_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv" / "bin" / "fedlora-ray"
CONFIG = "jobs/configs/quickstart.yaml"
WORKLOAD = [
    "federation.rounds=5",
    "federation.batch_size=8",
    "federation.local_epochs=1",
    "runtime.num_actors=2",
    "runtime.torch_threads=1",
    "runtime.num_cpus_per_actor=1",
    "runtime.progress=true",
    "log.flush_every=1",  # rounds.parquet is rewritten after every round: its first write marks round 1
]
# ray: a local cluster started by the run itself; ray-warm: a cluster started once beforehand
# (`ray start --head`), joined through runtime.ray_address; serial: one process, no Ray
RUNNERS = {"ray": [], "ray-warm": [], "serial": ["runtime.backend=serial"]}
BASELINE = " (baseline)"  # suffix of a runner measured on --baseline's code
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
}
INTERVAL_S = 0.2
TIMEOUT_S = 900.0
MB = 1024 * 1024
GIB = 1024**3
FIRST_ROUND_LINE = re.compile(r"round\s+1/\d+ \|")

# Process kinds, matched against a process's command line (Ray rewrites a worker's title as it
# becomes an actor or runs a task, so a PID keeps the most specific kind it was ever seen as).
_KINDS = [
    ("client actor", "ray::ClientActor"),
    ("driver actor", "ray::DriverActor"),
    ("gcs_server", "gcs_server"),
    ("raylet", "raylet/raylet"),
    ("dashboard agent", "dashboard/agent.py"),
    ("dashboard", "dashboard/dashboard.py"),
    ("runtime_env agent", "runtime_env/agent/main.py"),
    ("log monitor", "log_monitor.py"),
    ("monitor", "autoscaler/_private/monitor.py"),
    ("idle worker", "ray::IDLE"),
    ("idle worker", "default_worker.py"),
]
_RANK = {name: i for i, (name, _) in enumerate(_KINDS)}


def process_kind(cmdline: str, is_root: bool) -> str:
    if is_root:
        return "fedlora-ray (launched process)"
    for name, needle in _KINDS:
        if needle in cmdline:
            return name
    return "other"


class TreeSampler:
    """Samples the RSS of a process and all its descendants until the process exits."""

    def __init__(
        self, root: subprocess.Popen, t0: float, run_dir: Path, pss: bool, cluster: int | None = None
    ) -> None:
        """``cluster``: the PID of a warm cluster's head (`ray start`), whose processes (daemons,
        and the run's driver and client actors, which the cluster starts) count with the tree."""
        self.root = psutil.Process(root.pid)
        self.cluster = psutil.Process(cluster) if cluster else None
        self.popen = root
        self.t0 = t0
        self.rounds_file = run_dir / "rounds.parquet"
        self.pss = pss
        self.procs: dict[int, dict[str, Any]] = {}  # pid -> what we know of it
        self.peak_bytes = 0
        self.peak_at_s = 0.0
        self.peak_before_round1 = 0
        self.first_round_s: float | None = None
        self.cpu_to_round1 = 0.0
        self.series: list[tuple[float, float, int]] = []  # (s since launch, tree MB, processes)
        self.pss_snapshot: list[dict[str, Any]] = []

    def _tree(self) -> list[psutil.Process]:
        out = []
        for root in (self.root, self.cluster):
            if root is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                out += [root, *root.children(recursive=True)]
        return out

    def sample(self) -> None:
        now = time.time() - self.t0
        total, alive = 0, 0
        for p in self._tree():
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    cpu = p.cpu_times()
                    info = self.procs.get(p.pid)
                    if info is None or info["create_time"] != p.create_time():
                        info = self.procs[p.pid] = {
                            "pid": p.pid, "create_time": p.create_time(), "kind": "other",
                            "cmdline": "", "peak_bytes": 0, "first_seen_s": now, "process": p,
                        }  # fmt: skip
                    cmd = " ".join(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            kind = process_kind(cmd, p.pid == self.root.pid)
            if _RANK.get(kind, 99) <= _RANK.get(info["kind"], 99) or info["kind"] == "other":
                info["kind"], info["cmdline"] = kind, cmd[:300]
            info["peak_bytes"] = max(info["peak_bytes"], rss)
            info["cpu_s"] = cpu.user + cpu.system
            info["last_seen_s"] = now
            total += rss
            alive += 1
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_at_s = total, now
        if self.first_round_s is None:
            self.peak_before_round1 = self.peak_bytes
            if self.rounds_file.exists():
                self.first_round_s = self.rounds_file.stat().st_mtime - self.t0
                # CPU seconds spent by the tree so far (exited processes keep their last
                # reading): unlike wall time, hardly changed by other work on the machine
                for i in self.procs.values():
                    i["cpu_s_to_round1"] = i.get("cpu_s", 0.0)
                self.cpu_to_round1 = sum(i["cpu_s_to_round1"] for i in self.procs.values())
                if self.pss:
                    self._snapshot_pss()
        self.series.append((round(now, 2), round(total / MB, 1), alive))

    def _snapshot_pss(self) -> None:
        """Each process's RSS, PSS and USS once (reading smaps is slow: not every sample)."""
        for p in self._tree():
            try:
                full = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            kind = self.procs.get(p.pid, {}).get("kind", "other")
            self.pss_snapshot.append({"pid": p.pid, "kind": kind, "rss_mb": full.rss / MB,
                                      "pss_mb": full.pss / MB, "uss_mb": full.uss / MB})  # fmt: skip

    def run(self, timeout_s: float) -> None:
        while self.popen.poll() is None:
            start = time.perf_counter()
            self.sample()
            if time.time() - self.t0 > timeout_s:
                break
            time.sleep(max(0.0, INTERVAL_S - (time.perf_counter() - start)))

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this tree still alive (the same PID and start time as when seen); a
        warm cluster's own processes are left to it."""
        out = []
        cluster = set()
        if self.cluster is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                cluster = {self.cluster.pid, *(p.pid for p in self.cluster.children(recursive=True))}
        for info in self.procs.values():
            if info["pid"] in cluster:
                continue
            p = info["process"]
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out


def kill_tree(sampler: TreeSampler) -> list[str]:
    """Terminate, then kill, every process of the tree we started that is still alive. Only
    PIDs seen as descendants of our launch (and checked against their start time) are touched."""
    procs = sampler.leftovers()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    return [f"{p.pid} {sampler.procs[p.pid]['kind']}" for p in procs]


def read_round1(run_dir: Path) -> dict[str, float]:
    """Round 1's own timing from the Parquet log: ``elapsed_seconds`` counts from the moment the
    run's backend was built and the initial adapter fetched, so the start-up is the rest."""
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(run_dir / "rounds.parquet").to_pylist()
    except Exception:  # a failed run: the caller reports the output instead
        return {}
    first = next((r for r in rows if r["round"] == 1), None)
    if first is None:
        return {}
    return {
        "round1_elapsed_s": float(first["elapsed_seconds"]),
        "round1_round_s": float(first["round_seconds"]),
    }


class WarmCluster:
    """`ray start --head --block` on 127.0.0.1 in its own process group and temporary folder, with
    the measured code first on its workers' path; stopped by signalling that group (never `ray
    stop`, which would stop every Ray on the machine)."""

    def __init__(self, source: Path, num_cpus: int) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="fr-warm-", dir="/tmp"))  # short: socket paths
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_ENV)
        env["PYTHONPATH"] = str(source)
        ray_bin = str(CLI.parent / "ray")
        self.popen = subprocess.Popen(
            [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             f"--num-cpus={num_cpus}", "--include-dashboard=false", f"--temp-dir={self.temp}",
             "--disable-usage-stats"],
            cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and self.popen.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                time.sleep(3)  # the GCS answers; give the raylet a moment more
                return
            time.sleep(0.5)
        raise RuntimeError("the warm Ray head did not start")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM to the head's group, then SIGKILL to every process the cluster started (seen
        before the first signal: its daemons and workers are not all in that group)."""
        try:
            head = psutil.Process(self.popen.pid)
            procs = [head, *head.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        shutil.rmtree(self.temp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_once(
    runner: str,
    overrides: list[str],
    env_extra: dict[str, str],
    source: Path,
    pss: bool,
    warm: WarmCluster | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fr-startup-") as tmp:
        run_dir = Path(tmp) / "run"
        ray_tmp = Path(tmp) / "ray"  # a private Ray temp dir: `address=auto` elsewhere never finds it
        ray_tmp.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local cluster
        env.update(RAY_ENV)
        env["RAY_TMPDIR"] = str(ray_tmp)
        if source != ROOT:
            env["PYTHONPATH"] = str(source)
        env.update(env_extra)
        cmd = [str(CLI), "run", CONFIG, "--out", str(run_dir)]
        joined = [f"runtime.ray_address={warm.address}"] if warm is not None else []
        for o in [*WORKLOAD, *RUNNERS[runner.removesuffix(BASELINE)], *joined, *overrides]:
            cmd += ["--set", o]
        lines: list[tuple[float, str]] = []
        t0 = time.time()
        popen = subprocess.Popen(
            cmd, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )

        def read() -> None:
            assert popen.stdout is not None
            for line in popen.stdout:
                lines.append((time.time() - t0, line.rstrip("\n")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sampler = TreeSampler(popen, t0, run_dir, pss, warm.popen.pid if warm is not None else None)
        try:
            sampler.run(TIMEOUT_S)
        finally:
            if popen.poll() is None:
                popen.terminate()
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
            killed = kill_tree(sampler)
        total_s = time.time() - t0
        reader.join(timeout=5)
        progress_s = next((t for t, line in lines if FIRST_ROUND_LINE.search(line)), None)
        if popen.returncode != 0 or sampler.first_round_s is None:
            tail = "\n".join(line for _, line in lines[-40:])
            raise RuntimeError(f"{runner} run failed (exit {popen.returncode}):\n{tail}")
        round1 = read_round1(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        shutil.rmtree(ray_tmp, ignore_errors=True)
    procs = sorted(sampler.procs.values(), key=lambda i: -i["peak_bytes"])
    return {
        "runner": runner,
        "first_round_s": sampler.first_round_s,
        "first_progress_line_s": progress_s,
        "cpu_s_to_round1": sampler.cpu_to_round1,
        "startup_before_run_loop_s": sampler.first_round_s - round1.get("round1_elapsed_s", 0.0),
        **round1,
        "total_s": total_s,
        "peak_tree_gib": sampler.peak_bytes / GIB,
        "peak_tree_at_s": sampler.peak_at_s,
        "peak_tree_before_round1_gib": sampler.peak_before_round1 / GIB,
        "processes": [
            {
                ("peak_mb" if k == "peak_bytes" else k): (v / MB if k == "peak_bytes" else v)
                for k, v in i.items()
                if k != "process"
            }
            for i in procs
        ],  # fmt: skip
        "self_reported_max_rss_mb": [w.get("max_rss_bytes", 0) / MB for w in summary.get("workers", [])],
        "pss_at_round1": sampler.pss_snapshot,
        "killed_leftovers": killed,
        "series": sampler.series,
    }


def by_kind(processes: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per process kind: how many, the largest single peak, and the sum of their peaks (MB)."""
    out: dict[str, dict[str, float]] = {}
    for p in processes:
        k = out.setdefault(
            p["kind"], {"count": 0, "max_peak_mb": 0.0, "sum_peak_mb": 0.0, "cpu_s_to_round1": 0.0}
        )
        k["count"] += 1
        k["max_peak_mb"] = max(k["max_peak_mb"], p["peak_mb"])
        k["sum_peak_mb"] += p["peak_mb"]
        k["cpu_s_to_round1"] += p.get("cpu_s_to_round1", 0.0)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["sum_peak_mb"]))


def code_state(source: Path) -> str:
    """The commit the measured code is at, and whether its tracked files had local changes
    (others may be editing the working tree while this runs)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or f"not a git checkout: {source}"


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}-{hi:{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each runner (default 2)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    ap.add_argument("--runners", default="ray,ray-warm,serial", help="comma-separated: ray, ray-warm, serial")
    ap.add_argument("--baseline", type=Path, help="a checkout of the previous code, measured alternately")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=value")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--source", type=Path, default=ROOT, help="a copy of the repository to run instead")
    ap.add_argument("--pss", action="store_true", help="one PSS/USS snapshot per process at round 1")
    args = ap.parse_args()
    runners = args.runners.split(",")
    unknown = set(runners) - set(RUNNERS)
    if unknown:
        ap.error(f"unknown runner(s) {sorted(unknown)}; choose from {sorted(RUNNERS)}")
    env_extra = dict(e.split("=", 1) for e in args.env)

    sources = {"": args.source.resolve()}
    if args.baseline is not None:
        sources[BASELINE] = args.baseline.resolve()
    warm = {}
    if "ray-warm" in runners:  # started once, before any run: what "warm" means
        warm = {tag: WarmCluster(src, num_cpus=os.cpu_count() or 2) for tag, src in sources.items()}
    runs: dict[str, list[dict[str, Any]]] = {r + tag: [] for r in runners for tag in sources}
    try:
        for rep in range(args.repeats):
            for runner in runners:  # alternated, so that the shared machine's drift hits all alike
                for tag, src in sources.items():
                    cluster = warm.get(tag) if runner == "ray-warm" else None
                    r = run_once(runner + tag, args.overrides, env_extra, src, args.pss, cluster)
                    runs[runner + tag].append(r)
                    _print_run(rep, args.repeats, runner + tag, r)
    finally:
        for cluster in warm.values():
            cluster.stop()
    _write(args, runs, sources, env_extra)


def _print_run(rep: int, repeats: int, runner: str, r: dict[str, Any]) -> None:
    heavy = ", ".join(f"{p['kind']} {p['peak_mb']:.0f}" for p in r["processes"][:4])
    print(
        f"[{rep + 1}/{repeats}] {runner}: first round {r['first_round_s']:.1f} s "
        f"(start-up {r['startup_before_run_loop_s']:.1f} s + round 1 {r['round1_elapsed_s']:.1f} s; "
        f"tree CPU {r['cpu_s_to_round1']:.0f} s), "
        f"peak tree RSS {r['peak_tree_gib']:.2f} GiB at {r['peak_tree_at_s']:.0f} s "
        f"({r['peak_tree_before_round1_gib']:.2f} before round 1 ended); MB: {heavy}",
        flush=True,
    )
    if r["killed_leftovers"]:
        print(f"    killed leftover processes: {r['killed_leftovers']}", flush=True)


def _write(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
    sources: dict[str, Path],
    env_extra: dict[str, str],
) -> None:
    runners = sorted({r.removesuffix(BASELINE) for r in runs})
    summary = {}
    for runner, rs in runs.items():
        kinds: dict[str, dict[str, float]] = {}
        for r in rs:  # per kind, the largest figures over the repeats
            for name, k in by_kind(r["processes"]).items():
                agg = kinds.setdefault(name, {})
                for field, value in k.items():
                    agg[field] = max(agg.get(field, 0.0), value)
            shared: dict[str, list[float]] = {}  # with --pss: kind -> [PSS, USS] of its processes
            for snap in r["pss_at_round1"]:
                both = shared.setdefault(snap["kind"], [0.0, 0.0])
                both[0] += snap["pss_mb"]
                both[1] += snap["uss_mb"]
            for name, (pss, uss) in shared.items():
                agg = kinds[name]
                agg["pss_at_round1_mb"] = max(agg.get("pss_at_round1_mb", 0.0), pss)
                agg["uss_at_round1_mb"] = max(agg.get("uss_at_round1_mb", 0.0), uss)
        summary[runner] = {
            "first_round_s": [r["first_round_s"] for r in rs],
            "startup_before_run_loop_s": [r["startup_before_run_loop_s"] for r in rs],
            "round1_elapsed_s": [r["round1_elapsed_s"] for r in rs],
            "cpu_s_to_round1": [r["cpu_s_to_round1"] for r in rs],
            "peak_tree_gib": [r["peak_tree_gib"] for r in rs],
            "peak_tree_before_round1_gib": [r["peak_tree_before_round1_gib"] for r in rs],
            "total_s": [r["total_s"] for r in rs],
            "by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1]["sum_peak_mb"])),
        }
    meta = {
        "benchmark": "startup_memory",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / GIB:.0f} GiB, python {platform.python_version()}",
        "source": str(args.source.resolve()),
        "code": code_state(args.source.resolve()),
        "baseline": str(sources[BASELINE]) if BASELINE in sources else None,
        "baseline_code": code_state(sources[BASELINE]) if BASELINE in sources else None,
        "config": CONFIG,
        "overrides": [*WORKLOAD, *args.overrides],
        "runner_overrides": {r: RUNNERS[r] for r in runners},
        "runners": list(runs),
        "env": env_extra,
        "sample_interval_s": INTERVAL_S,
        "summary": summary,
        "runs": runs,
    }
    lines = [
        "# Start-up time and peak memory of a run (benchmarks/startup_memory.py)",
        "",
        f"{meta['date']}, {meta['machine']}, code {meta['code']}"
        + (f" against the baseline {meta['baseline_code']}" if meta["baseline"] else "")
        + f". `fedlora-ray run {CONFIG}` with "
        f"{', '.join(f'`{o}`' for o in meta['overrides'])}"
        + (f", env {', '.join(f'`{k}={v}`' for k, v in env_extra.items())}" if env_extra else "")
        + f"; {args.repeats} run(s) of each runner, alternated; ranges are min-max over them. "
        "Time to first round: launch to the write of rounds.parquet after round 1 (start-up = "
        "that minus round 1's own `elapsed_seconds`). Peak RSS of the tree: the largest sum of "
        f"the RSS of the launched process and all its descendants, sampled every {INTERVAL_S} s "
        "(shared pages count once per process). CPU s: user + system seconds of the whole tree until "
        "round 1 was seen, which other load on the machine changes far less than wall time. "
        "Per-process peaks: the largest over the repeats. ray-warm joins a cluster started once "
        "beforehand (`ray start --head`, with `runtime.ray_address`); its tree counts that "
        "cluster's processes (daemons, driver and client actors) with the launched one.",
        "",
        "| runner | time to first round (s) | start-up before the run loop (s) | round 1 (s) "
        "| CPU s of the tree until round 1 "
        "| peak RSS of tree (GiB) | peak RSS until round 1 (GiB) | per-process peaks of the heaviest (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for runner, s in summary.items():
        heavy = "; ".join(
            name + (f" x{k['count']:.0f}" if k["count"] > 1 else "") + f": {k['max_peak_mb']:.0f}"
            for name, k in list(s["by_kind"].items())[:6]
        )
        lines.append(
            f"| {runner} | {_span(s['first_round_s'], '.1f')} "
            f"| {_span(s['startup_before_run_loop_s'], '.1f')} "
            f"| {_span(s['round1_elapsed_s'], '.1f')} | {_span(s['cpu_s_to_round1'], '.0f')} "
            f"| {_span(s['peak_tree_gib'], '.2f')} "
            f"| {_span(s['peak_tree_before_round1_gib'], '.2f')} | {heavy} |"
        )
    lines += ["", "Per process kind (largest over the repeats; PSS and USS: the kind's processes "
              "together at round 1, with --pss):", "",
              "| runner | process kind | count | peak of one (MB) | sum of peaks (MB) | CPU s to round 1 "
              "| PSS at round 1 (MB) | USS at round 1 (MB) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for runner, s in summary.items():
        for name, k in s["by_kind"].items():
            shared = [f"{k[f]:.0f}" if f in k else "-" for f in ("pss_at_round1_mb", "uss_at_round1_mb")]
            lines.append(
                f"| {runner} | {name} | {k['count']:.0f} | {k['max_peak_mb']:.0f} | {k['sum_peak_mb']:.0f} "
                f"| {k['cpu_s_to_round1']:.1f} | {shared[0]} | {shared[1]} |"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup_memory.json").write_text(json.dumps(meta, indent=1))
    (args.out / "startup_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
