"""The driver at scale: memory and per-round overhead against the number of clients N.

For N in {100, 1,000, 10,000, 100,000} with K = 100 clients a round, the tiny model
(`model.name=tiny`, r = 8) and SOFT with error feedback (`compression.method=soft
compression.error_feedback=true`), each N runs in a fresh process on the serial backend (the
process that runs the round loop, as the DriverActor does on Ray, plus the one client trainer):
R rounds of real training (``--rounds``), then ``--replay`` rounds in which every client answers
at once with a stored reply (the driver's work alone), then one last round that evaluates.
It measures:

  - the process's peak memory: its resident set sampled every 0.05 s from here, and the
    kernel's high-water mark (``ru_maxrss``) that the process reports at its end; with the RSS
    once the client trainer is built (model, tokenised data: the clients' side, on Ray the
    actors') and what the driver's setup adds to it (partition, channel, controller, logs);
  - the driver's overhead per round beyond client compute, from rounds.parquet of the real
    rounds 3..R: the round function's wall time (``round_seconds``) less the clients' summed
    ``client_seconds``, and the whole round's (successive ``elapsed_seconds``: callbacks, log
    flush and checkpoints included) less the same; medians;
  - the replayed rounds' wall time: median, and mean (checkpoints every 5 rounds included);
  - with ``--disk``, all of it again with the client store on disk (``runtime.client_store_mem_mb=0``);
  - the adaptive plan's solve time (``controller.kind=adaptive algorithm.kind=fslora
    sampling.kind=independent``, ``sampling.q_min = min(0.01, 0.1 K / N)``): ``adaptive_solve_seconds``
    of a one-round run's summary.json, with a time limit per N (``--adaptive-timeout``; a larger N
    is not tried after one stops);
  - ``--profile N``: cProfile of the replayed rounds at N (in-RAM store), by cumulative time.

WordNet (~4,000 training examples) cannot give 100,000 clients an example each, so this script
registers a synthetic labelled text dataset (``scale_synthetic``: 4 classes, five-word sentences
three of whose words come from their class's list, 2 training examples per client, 400 test
examples) in each run's process; the package's datasets are not touched.

    python benchmarks/scale.py [--sizes 100 1000 10000 100000] [--rounds 6] [--replay 15] [--disk]
        [--adaptive-sizes 100 1000 10000 100000] [--adaptive-timeout 900] [--profile 100000]

Printed, and written to benchmarks/results/scale.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}.items():
    os.environ.setdefault(_k, _v)

K = 100
EXAMPLES_PER_CLIENT = 2
TEST_EXAMPLES = 400
CLASS_WORDS = (
    ("river", "lake", "water", "rain", "ocean", "stream", "wave", "flood"),
    ("stone", "rock", "metal", "iron", "steel", "brick", "sand", "clay"),
    ("bird", "horse", "dog", "cat", "fish", "wolf", "sheep", "mouse"),
    ("song", "music", "dance", "poem", "story", "play", "film", "drum"),
)
COMMON_WORDS = ("the", "a", "of", "small", "large", "old", "new", "one", "some", "many", "near", "far")
SOFT = ["compression.method=soft", "compression.error_feedback=true", "compression.keep_ratio=0.1"]
ADAPTIVE = [
    "algorithm.kind=fslora", "sampling.kind=independent", "controller.kind=adaptive",
    "model.train_head=false", "channel.compute_samples_per_s=40", "channel.compute_sigma=1.0",
]  # fmt: skip


def base_overrides(n: int, rounds: int) -> list[str]:
    return [
        "model.name=tiny", "model.max_length=16", "data.dataset=scale_synthetic", "data.partition=iid",
        f"federation.num_clients={n}", f"federation.clients_per_round={K}", f"federation.rounds={rounds}",
        f"federation.eval_every={rounds}", "federation.batch_size=16", "federation.lr=0.005",
        "checkpoint.every=5", "runtime.backend=serial", "runtime.torch_threads=1", "runtime.progress=false",
    ]  # fmt: skip


# ---------------------------------------------------------------- the child: one run


def register_synthetic(train_examples: int) -> None:
    """``data.dataset: scale_synthetic``: class c's sentences draw 3 of their 5 words from c's
    list and 2 from common words, seeded; ``train_examples`` training sentences and 400 test."""
    import numpy as np

    from fedlora_ray.tasks.base import Split, register_dataset

    def sentences(count: int, seed: int) -> tuple[np.ndarray, tuple[str, ...]]:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, len(CLASS_WORDS), count)
        own = rng.integers(0, len(CLASS_WORDS[0]), (count, 3))
        common = rng.integers(0, len(COMMON_WORDS), (count, 2))
        texts = tuple(
            " ".join((COMMON_WORDS[c0], words[w0], words[w1], COMMON_WORDS[c1], words[w2]))
            for words, (w0, w1, w2), (c0, c1) in zip(
                [CLASS_WORDS[y] for y in labels.tolist()], own.tolist(), common.tolist()
            )
        )
        labels = labels.astype(np.int64)
        labels.setflags(write=False)
        return labels, texts

    names = tuple(words[0] for words in CLASS_WORDS)

    @register_dataset("scale_synthetic", "text")
    def load(cfg: Any) -> tuple[Split, Split]:
        (ytr, xtr), (yte, xte) = sentences(train_examples, 1), sentences(TEST_EXAMPLES, 2)
        return Split(ytr, names, xtr), Split(yte, names, xte)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Replay:
    """The serial backend, except that once ``armed`` it answers every task at once with the
    replies it last computed, relabelled: rounds then cost the driver's work alone."""

    def __init__(self, backend: Any) -> None:
        self.inner, self.armed, self.last = backend, False, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def train(self, adapter: Any, tasks: list[Any]) -> list[Any]:
        import copy

        if not self.armed:
            self.last = self.inner.train(adapter, tasks)
            return self.last
        replies = [copy.copy(r) for r in self.last[: len(tasks)]]
        for reply, task in zip(replies, tasks):
            reply.client_id = task.client_id
        return replies


def child(n: int, overrides: list[str], out: Path, result: Path, real_rounds: int, profile: bool) -> None:
    """``real_rounds`` rounds of real training, then the rest replayed (``Replay``), timed and
    (with ``profile``) profiled."""
    register_synthetic(EXAMPLES_PER_CLIENT * n)
    from fedlora_ray.components import load_run_config
    from fedlora_ray.engine.run import FederatedRun
    from fedlora_ray.engine.serial import SerialBackend

    cfg = load_run_config(None, overrides)
    marks: dict[str, float] = {"start_rss_mb": rss_mb()}

    def backend(cfg: Any) -> Replay:
        made = Replay(SerialBackend(cfg))  # the model built and the data tokenised: the clients' side
        marks["backend_rss_mb"] = rss_mb()
        return made

    start = time.perf_counter()
    run = FederatedRun(cfg, backend, out)
    setup_s, setup_rss = time.perf_counter() - start, rss_mb()
    while run.round < real_rounds:
        run.run_round()
    real_rss = rss_mb()
    run.backend.armed = True  # type: ignore[attr-defined]
    replayed, stats = [], None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    while run.round < cfg.federation.rounds - 1:  # the last round evaluates
        begin = time.perf_counter()
        run.run_round()
        replayed.append(time.perf_counter() - begin)
    if profile:
        prof.disable()
        stats = top_functions(prof)
    summary = run.finish()
    import pandas as pd

    rounds = pd.read_parquet(out / "rounds.parquet")
    rounds = rounds[rounds["round"] <= real_rounds]
    store = run.state.clients
    payload = {
        **marks,
        "setup_seconds": setup_s,
        "setup_rss_mb": setup_rss,
        "real_rounds_rss_mb": real_rss,
        "end_rss_mb": rss_mb(),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "adaptive_solve_seconds": summary["adaptive_solve_seconds"],
        "rounds": rounds[["round", "round_seconds", "client_seconds", "elapsed_seconds"]].to_dict("list"),
        "replayed_round_seconds": replayed,
        "store_clients": len(store),
        "store_ram_mb": store.ram_bytes / 1e6,
        "store_disk_files": len(store.disk_index()),
        "profile": stats,
    }
    result.write_text(json.dumps(payload))


def top_functions(prof: Any, top: int = 30) -> list[dict[str, Any]]:
    """The functions of the replayed rounds (the driver's alone) with the most cumulative time."""
    import pstats

    rows = [
        {"function": f"{Path(file).name}:{line}({name})", "calls": calls, "own_s": own, "cum_s": cum}
        for (file, line, name), (_cc, calls, own, cum, _callers) in pstats.Stats(prof).stats.items()  # type: ignore[attr-defined]
    ]
    rows.sort(key=lambda r: -r["cum_s"])
    return rows[:top]


# ---------------------------------------------------------------- the parent


def launch(
    n: int, overrides: list[str], real_rounds: int, timeout: float, profile: bool = False
) -> dict[str, Any]:
    """One run in a fresh process; its RSS sampled from here every 0.05 s."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        out, result = Path(tmp) / "run", Path(tmp) / "result.json"
        cmd = [
            sys.executable, __file__, "--child", str(n), str(out), str(result), json.dumps(overrides),
            str(real_rounds), *(["--profile-child"] if profile else []),
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        peak, done = [0.0], threading.Event()

        def sample() -> None:
            ps = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], ps.memory_info().rss / 2**20)
                except psutil.Error:
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"timed_out": True, "wall_seconds": time.perf_counter() - start}
        finally:
            done.set()
            sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"N={n}: the run failed:\n{err[-3000:]}")
        data: dict[str, Any] = json.loads(result.read_text())
        data["sampled_peak_rss_mb"] = peak[0]
        data["wall_seconds"] = time.perf_counter() - start
        return data


def overheads(got: dict[str, Any]) -> dict[str, float]:
    """From the real rounds 3..R (the first two warm up): the round function's and the whole
    round's wall time less the clients' summed compute; from the replayed rounds: the driver's
    whole round (median, and mean with the checkpoint rounds)."""
    rounds = got["rounds"]
    r, secs, client, elapsed = (
        rounds[k] for k in ("round", "round_seconds", "client_seconds", "elapsed_seconds")
    )
    pick = [i for i in range(1, len(r)) if r[i] >= 3]
    replayed = got["replayed_round_seconds"]
    return {
        "round_overhead_s": statistics.median(secs[i] - client[i] for i in pick),
        "whole_round_overhead_s": statistics.median(elapsed[i] - elapsed[i - 1] - client[i] for i in pick),
        "client_seconds": statistics.median(client[i] for i in pick),
        "driver_round_s": statistics.median(replayed),
        "driver_round_mean_s": statistics.mean(replayed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    ap.add_argument("--rounds", type=int, default=6, help="rounds of real training per N")
    ap.add_argument("--replay", type=int, default=15, help="rounds replayed after them per N")
    ap.add_argument("--disk", action="store_true", help="also run each N with the client store on disk")
    ap.add_argument("--adaptive-sizes", type=int, nargs="*", default=[100, 1000, 10000, 100000])
    ap.add_argument("--adaptive-timeout", type=float, default=900)
    ap.add_argument("--profile", type=int, default=0, help="profile the replayed rounds of the run at this N")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, out, result, overrides, real = args.child
        child(int(n), json.loads(overrides), Path(out), Path(result), int(real), args.profile_child)
        return

    rows: list[dict[str, Any]] = []
    profile = None
    total = args.rounds + args.replay + 1  # + the last round, which evaluates
    variants = [("ram", [])] + ([("disk", ["runtime.client_store_mem_mb=0"])] if args.disk else [])
    for n in args.sizes:
        for store, extra in variants:
            profiled = n == args.profile and store == "ram"
            got = launch(n, [*base_overrides(n, total), *SOFT, *extra], args.rounds, 3600, profiled)
            row = {
                "N": n, "K": K, "store": store, "real_rounds": args.rounds, "replayed_rounds": args.replay,
                **overheads(got),
                "peak_rss_mb": max(got["sampled_peak_rss_mb"], got["maxrss_mb"]),
                "maxrss_mb": got["maxrss_mb"], "sampled_peak_rss_mb": got["sampled_peak_rss_mb"],
                "imports_rss_mb": got["start_rss_mb"], "clients_side_rss_mb": got["backend_rss_mb"],
                "setup_rss_mb": got["setup_rss_mb"],
                "driver_setup_mb": got["setup_rss_mb"] - got["backend_rss_mb"],
                "after_rounds_rss_mb": got["end_rss_mb"], "setup_seconds": got["setup_seconds"],
                "store_clients": got["store_clients"], "store_ram_mb": got["store_ram_mb"],
                "store_disk_files": got["store_disk_files"], "wall_seconds": got["wall_seconds"],
            }  # fmt: skip
            rows.append(row)
            if profiled:
                profile = {
                    "N": n,
                    "rounds": f"{args.rounds + 1}-{total - 1} (replayed)",
                    "functions": got["profile"],
                }
            ms = {k: row[k] * 1e3 for k in row if k.endswith("_s") and k != "client_seconds"}
            print(
                f"N={n:>6} store={store:<4} | peak RSS {row['peak_rss_mb']:6.0f} MB (model+data "
                f"{row['clients_side_rss_mb']:.0f}, driver setup +{row['driver_setup_mb']:.0f}) | overhead: "
                f"round {ms['round_overhead_s']:6.1f} ms, whole {ms['whole_round_overhead_s']:6.1f} ms, "
                f"replayed {ms['driver_round_s']:6.1f} ms (mean {ms['driver_round_mean_s']:.1f}) | "
                f"clients {row['client_seconds']:.2f} s | setup {row['setup_seconds']:.1f} s",
                flush=True,
            )
        write(args.out, rows, [], profile, args.adaptive_timeout, quiet=True)  # what there is so far
    adaptive: list[dict[str, Any]] = []
    for n in args.adaptive_sizes:
        try:
            q_min = f"sampling.q_min={min(0.01, 0.1 * K / n):g}"  # the default 0.01 leaves K < q_min N
            got = launch(n, [*base_overrides(n, 1), *ADAPTIVE, q_min], 1, args.adaptive_timeout)
        except RuntimeError as err:  # recorded; the results so far are still written
            print(f"adaptive N={n:>6}: failed: {str(err)[-400:]}", flush=True)
            adaptive.append({"N": n, "timed_out": False, "error": str(err)[-400:]})
            break
        entry = {
            "N": n, "timed_out": bool(got.get("timed_out")), "wall_seconds": got["wall_seconds"],
            "solve_seconds": got.get("adaptive_solve_seconds"),
            "peak_rss_mb": max(got.get("sampled_peak_rss_mb", 0), got.get("maxrss_mb", 0)) or None,
        }  # fmt: skip
        adaptive.append(entry)
        solve = f"> {args.adaptive_timeout:.0f}" if entry["timed_out"] else f"{entry['solve_seconds']:.2f}"
        print(f"adaptive N={n:>6}: solve {solve} s (one-round run {entry['wall_seconds']:.0f} s)", flush=True)
        write(args.out, rows, adaptive, profile, args.adaptive_timeout, quiet=True)
        if entry["timed_out"]:
            break  # larger N take longer still
    if profile:
        print(f"profile of rounds {profile['rounds']} at N={profile['N']} (cumulative s, own s, calls):")
        for f in profile["functions"]:
            print(f"  {f['cum_s']:8.3f} {f['own_s']:8.3f} {f['calls']:>8} {f['function']}")
    write(args.out, rows, adaptive, profile, args.adaptive_timeout)


def write(
    out: Path, rows: list[dict[str, Any]], adaptive: list[dict[str, Any]], profile: Any, timeout: float,
    quiet: bool = False,
) -> None:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    doc = {
        "meta": meta,
        "rows": rows,
        "adaptive": adaptive,
        "adaptive_timeout_s": timeout,
        "profile": profile,
    }
    (out / "scale.json").write_text(json.dumps(doc, indent=2))
    lines = [
        "# The driver at scale: memory and per-round overhead against N",
        "",
        f"`python benchmarks/scale.py` on {meta['machine']} ({meta['cpus']} CPUs, shared with other work). "
        f"Tiny model (r = 8), SOFT with error feedback, K = {K} clients a round, the serial backend in a "
        "fresh process per N, a synthetic dataset with 2 training examples per client.",
        "",
        "- peak RSS: the whole process (driver + the one client trainer); model + data: its RSS once the "
        "client trainer is built (tiny model, tokenised training split: the clients' side, on Ray the "
        "actors'); driver setup: what the driver's setup adds to that (partition, channel, controller, "
        "store, logs).",
        "- overheads per round beyond client compute, medians of the real rounds 3..R: the round "
        "function's wall time less the clients' summed train_seconds, and the whole round's (callbacks, "
        "log flush and checkpoints included).",
        "- replayed: the whole round when every client answers at once with a stored reply (the driver's "
        "work alone), median and mean (the mean includes the checkpoint every 5 rounds).",
        "",
        "| N | store | peak RSS (MB) | model + data (MB) | driver setup (MB) | round overhead (ms) "
        "| whole-round overhead (ms) | replayed round (ms) | replayed mean (ms) | client compute (s) "
        "| setup (s) | clients in store |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['N']:,} | {r['store']} | {r['peak_rss_mb']:.0f} | {r['clients_side_rss_mb']:.0f} | "
            f"{r['driver_setup_mb']:.0f} | {r['round_overhead_s'] * 1e3:.0f} | "
            f"{r['whole_round_overhead_s'] * 1e3:.0f} | {r['driver_round_s'] * 1e3:.0f} | "
            f"{r['driver_round_mean_s'] * 1e3:.0f} | {r['client_seconds']:.2f} | {r['setup_seconds']:.1f} | "
            f"{r['store_clients']:,} |"
        )
    lines += [
        "",
        "Adaptive plan (`controller.kind=adaptive algorithm.kind=fslora sampling.kind=independent`): "
        "`adaptive_solve_seconds` of a one-round run's summary.json; one solve per run. "
        "`sampling.q_min = min(0.01, 0.1 K / N)` (the default 0.01 would need K >= 0.01 N).",
        "",
        "| N | solve (s) | whole one-round run (s) |",
        "|---|---|---|",
    ]
    for a in adaptive:
        if "error" in a:
            lines.append(f"| {a['N']:,} | failed: {a['error'].splitlines()[-1]} | - |")
            continue
        solve = f"> {timeout:.0f} (stopped)" if a["timed_out"] else f"{a['solve_seconds']:.2f}"
        lines.append(f"| {a['N']:,} | {solve} | {a['wall_seconds']:.0f} |")
    if profile:
        lines += [
            "",
            f"cProfile of rounds {profile['rounds']} at N = {profile['N']:,}, by cumulative time:",
            "",
        ]
        lines += ["| cumulative (s) | own (s) | calls | function |", "|---|---|---|---|"]
        lines += [
            f"| {f['cum_s']:.3f} | {f['own_s']:.3f} | {f['calls']} | `{f['function']}` |"
            for f in profile["functions"]
        ]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    plot(out / "scale.png", rows, adaptive)
    if not quiet:
        print(f"wrote {out / 'scale.json'}, {out / 'scale.md'}, {out / 'scale.png'}")


def plot(path: Path, rows: list[dict[str, Any]], adaptive: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for store in sorted({r["store"] for r in rows}):
        sel = [r for r in rows if r["store"] == store]
        ns = [r["N"] for r in sel]
        axes[0].plot(ns, [r["peak_rss_mb"] for r in sel], "o-", label=f"peak RSS, store in {store}")
        axes[0].plot(ns, [r["clients_side_rss_mb"] for r in sel], "x:", label=f"model + data, {store}")
        ms = {
            k: [r[k] * 1e3 for r in sel]
            for k in ("round_overhead_s", "whole_round_overhead_s", "driver_round_s")
        }
        axes[1].plot(ns, ms["round_overhead_s"], "o-", label=f"round function, {store}")
        axes[1].plot(ns, ms["whole_round_overhead_s"], "s--", label=f"whole round, {store}")
        axes[1].plot(ns, ms["driver_round_s"], "^:", label=f"replayed round, {store}")
    axes[0].axhline(2048, color="grey", ls=":", label="2 GiB")
    axes[0].set(xscale="log", xlabel="clients N", ylabel="MB", title="process memory (serial backend)")
    axes[1].set(xscale="log", xlabel="clients N", ylabel="ms per round", ylim=(0, None))
    axes[1].set_title(f"driver overhead beyond client compute, K = {K}")
    done = [a for a in adaptive if a.get("solve_seconds") is not None]
    axes[2].plot([a["N"] for a in done], [a["solve_seconds"] for a in done], "o-")
    axes[2].set(xlabel="clients N", ylabel="s", title="adaptive plan: one solve")
    if done:
        axes[2].set(xscale="log", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
