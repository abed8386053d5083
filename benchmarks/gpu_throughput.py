"""Client updates per second of one resident base model: one client at a time, pools of actors
sharing a device, and many clients per pass (``runtime.clients_per_pass``).

Models (random weights: speed does not depend on them):
  vit_b16: ViT-B/16 at 224 px (CIFAR-sized 32 px images resized on the device), LoRA r=16 on the
           qkv of blocks 0, 3, 6 and 9, head trained;
  minilm:  all-MiniLM-L6-v2's architecture (6 layers, hidden 384), LoRA r=8 on query and value,
           head trained; token sequences of 8-40 tokens, as WordNet glosses are.
Work per client: `step` = one AdamW step on a batch of 8; `epoch` = one local epoch of 50
examples in batches of 8 (7 steps). An update is one client's local round, from loading the
global adapter to its trained factors back on the CPU, FedAvg (no compression).
Setups:
  (a) sequential   one process, the model resident, clients one after another;
  (b) pool-N       N Ray actors sharing the device (GPU: num_gpus = 1/N each; CPU: one thread
                   each), clients one after another in each;
  (c) pass-C       one process, C clients per pass;
  (d) pool-N x pass-C  the combinations.
Each setup trains `--clients` clients after a warm-up of the same work; the setups' repeats are
interleaved (the order rotating) and the median is kept. GPU memory is the peak allocated by
one process. Output: benchmarks/results/gpu_throughput.{json,md,png}; the JSON holds per model
`sequential_updates_per_s`, `best_updates_per_s`, `best_setup` and
`best_speedup_vs_sequential` for the headline work (one step of batch 8; bf16 on a GPU, fp32
on a CPU).

    python benchmarks/gpu_throughput.py                  # on a GPU: everything
    python benchmarks/gpu_throughput.py --cpu-check      # on a CPU: MiniLM, C = 10 against C = 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for key, value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}.items():
    os.environ.setdefault(key, value)

from fedlora_ray.batched.loop import ClientWork, train_pass  # noqa: E402
from fedlora_ray.components import load_run_config  # noqa: E402
from fedlora_ray.lora import get_adapter, set_adapter  # noqa: E402
from fedlora_ray.lora.model import TextClassifier, frozen_but_adapter, with_lora  # noqa: E402
from fedlora_ray.tasks import model_family  # noqa: E402
from fedlora_ray.tasks.base import Split  # noqa: E402
from fedlora_ray.tasks.bert import Tokenized  # noqa: E402
from fedlora_ray.tasks.images import image_batches  # noqa: E402
from fedlora_ray.train import train_local  # noqa: E402

POOL_EXAMPLES = 2000  # synthetic examples the clients draw theirs from
LABELS = 10
WORK = {"step": (8, 8), "epoch": (50, 8)}  # examples per client, batch size


def build(model: str, precision: str) -> tuple[torch.nn.Module, Any, Any]:
    """(model with LoRA and head, synthetic Batches, its config) on the CPU."""
    if model == "vit_b16":
        cfg = load_run_config(None, [
            "model.name=vit_b16", "model.allow_random_init=true", "model.lora_rank=16",
            "model.lora_alpha=32", "model.lora_blocks=[0,3,6,9]", "data.dataset=cifar100",
            f"runtime.precision={precision}",
        ])  # fmt: skip
        family = model_family("vit_b16")
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(POOL_EXAMPLES, 3, 32, 32), dtype=np.uint8)
        split = Split(rng.integers(0, LABELS, POOL_EXAMPLES), tuple(map(str, range(LABELS))), images)
        data = image_batches(split, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        return family.build(cfg.model, LABELS, 0), data, cfg
    from transformers import BertConfig, BertModel

    cfg = load_run_config(
        None, ["model.lora_rank=8", "model.lora_alpha=16", f"runtime.precision={precision}"]
    )
    torch.manual_seed(0)
    minilm = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    encoder = BertModel(minilm)
    net = TextClassifier(with_lora(encoder, cfg.model, cfg.model.target_modules, 0), 384, LABELS)
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 41, POOL_EXAMPLES)
    width = cfg.model.max_length
    ids = torch.tensor(rng.integers(1000, 30000, size=(POOL_EXAMPLES, width)))
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    data = Tokenized(ids * mask, mask, torch.tensor(rng.integers(0, LABELS, POOL_EXAMPLES)))
    return frozen_but_adapter(net, cfg.model), data, cfg


class Worker:
    """One resident model that trains clients, one at a time or C per pass."""

    def __init__(self, model: str, precision: str, device: str, threads: int = 0) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        net, self.data, self.cfg = build(model, precision)
        self.model = net.to(self.device)
        self.initial = get_adapter(self.model)

    def run(self, clients: int, per_pass: int, work: str, seed: int) -> float:
        """Seconds to train ``clients`` clients' local rounds."""
        examples, batch = WORK[work]
        rng = np.random.default_rng(seed)
        idx = [np.sort(rng.choice(len(self.data), examples, replace=False)) for _ in range(clients)]
        kw: dict[str, Any] = dict(epochs=1, batch_size=batch, lr=1e-3, weight_decay=0.0, device=self.device,
                                  precision=self.cfg.runtime.precision)  # fmt: skip
        self._sync()
        start = time.perf_counter()
        for first in range(0, clients, per_pass):
            if per_pass == 1:
                set_adapter(self.model, self.initial)
                train_local(self.model, self.data, idx[first], seed=seed + first, **kw)
                get_adapter(self.model)
            else:
                work_items = [
                    ClientWork(idx[c], seed + c) for c in range(first, min(first + per_pass, clients))
                ]
                train_pass(self.model, self.data, work_items, self.initial, **kw)
        self._sync()
        return time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gib(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else 0.0


class Pool:
    """N Ray actors, each a Worker, sharing the device; a setup's clients split evenly."""

    def __init__(self, n: int, model: str, precision: str, gpu: bool) -> None:
        import ray

        self.ray = ray
        remote = ray.remote(Worker)
        opts = {"num_gpus": 1.0 / n, "num_cpus": 0} if gpu else {"num_cpus": 1}
        device = "cuda" if gpu else "cpu"
        self.actors = [
            remote.options(**opts).remote(model, precision, device, 0 if gpu else 1) for _ in range(n)
        ]  # type: ignore[attr-defined]
        ray.get([a.run.remote(1, 1, "step", 0) for a in self.actors])

    def run(self, clients: int, per_pass: int, work: str, seed: int) -> float:
        share = -(-clients // len(self.actors))
        start = time.perf_counter()
        self.ray.get(
            [a.run.remote(share, per_pass, work, seed + i * share) for i, a in enumerate(self.actors)]
        )
        return time.perf_counter() - start

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


def measure(runner: Any, clients: int, per_pass: int, work: str, repeats: int) -> list[float]:
    runner.run(min(clients, max(per_pass, 2)), per_pass, work, 999)  # warm-up (kernels, allocator)
    return [clients / runner.run(clients, per_pass, work, 17 * r) for r in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vit_b16", "minilm"])
    parser.add_argument(
        "--precisions", nargs="+", default=None, help="default: bf16 fp32 on a GPU, fp32 on a CPU"
    )
    parser.add_argument("--works", nargs="+", default=["step", "epoch"])
    parser.add_argument("--per-pass", nargs="+", type=int, default=[4, 8, 16, 32, 64])
    parser.add_argument("--pools", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--clients", type=int, default=256, help="clients per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads of the in-process runs (0: torch's)"
    )
    parser.add_argument("--cpu-check", action="store_true",
                        help="CPU: MiniLM, fp32, C = 10 and 4 against one at a time, no pools")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--name", default="", help="file stem (default gpu_throughput, or gpu_throughput_cpu)"
    )
    parser.add_argument("--report", default="", help="only redraw the .md and .png of this results JSON")
    args = parser.parse_args()
    if args.report:
        path = Path(args.report)
        write_report(json.loads(path.read_text()), path.parent, path.stem)
        return
    gpu = torch.cuda.is_available()
    if args.cpu_check:
        args.models, args.per_pass, args.pools = ["minilm"], [4, 10], []
        args.clients = min(args.clients, 40)
    precisions = args.precisions or (["bf16", "fp32"] if gpu else ["fp32"])
    device = "cuda" if gpu else "cpu"
    device_name = (
        torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or 'cpu'} ({os.cpu_count()} cores)"
    )
    print(f"device: {device_name}; clients per measurement: {args.clients}; repeats: {args.repeats}")
    if args.pools:
        import ray

        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)

    rows: list[dict[str, Any]] = []
    for model in args.models:
        for precision in precisions:
            worker = Worker(model, precision, device, args.threads)
            runners: dict[str, tuple[Any, int]] = {"sequential": (worker, 1)}
            runners.update({f"pass-{c}": (worker, c) for c in args.per_pass})
            pools: list[Pool] = []
            for n in args.pools:
                pools.append(Pool(n, model, precision, gpu))
                runners[f"pool-{n}"] = (pools[-1], 1)
            for work in args.works:
                speeds: dict[str, list[float]] = {name: [] for name in runners}
                memory: dict[str, float] = {}
                for r in range(args.repeats):
                    names = list(runners)
                    names = names[r % len(names) :] + names[: r % len(names)]  # rotate: drift hits all alike
                    for name in names:
                        runner, per_pass = runners[name]
                        if runner is worker:
                            worker.reset_memory()
                        speeds[name] += measure(runner, args.clients, per_pass, work, 1)
                        if runner is worker:
                            memory[name] = max(memory.get(name, 0.0), worker.peak_memory_gib())
                best_pass = max(
                    (n for n in speeds if n.startswith("pass-")),
                    key=lambda n: statistics.median(speeds[n]),
                    default=None,
                )
                best_pool = max(
                    (p for p in pools),
                    key=lambda p: statistics.median(speeds[f"pool-{len(p.actors)}"]),
                    default=None,
                )
                if (
                    best_pass and best_pool is not None and len(best_pool.actors) > 1
                ):  # (d): the best pool with the best C
                    name = f"pool-{len(best_pool.actors)} x {best_pass}"
                    c = int(best_pass.split("-")[1])
                    speeds[name] = [args.clients / best_pool.run(args.clients, c, work, 5)] + [
                        args.clients / best_pool.run(args.clients, c, work, 7 + r)
                        for r in range(args.repeats - 1)
                    ]
                for name, values in speeds.items():
                    row = {
                        "model": model, "precision": precision, "work": work, "setup": name,
                        "updates_per_s": statistics.median(values), "repeats": values,
                        "gpu_peak_gib": memory.get(name),
                    }  # fmt: skip
                    rows.append(row)
                    print(
                        f"{model:8s} {precision} {work:5s} {name:22s} {row['updates_per_s']:9.1f} updates/s"
                    )
            for p in pools:
                p.close()
            del worker
            if gpu:
                torch.cuda.empty_cache()

    headline_precision = "bf16" if gpu else "fp32"
    summary: dict[str, Any] = {"device": device_name, "clients_per_measurement": args.clients, "rows": rows}
    for model in args.models:
        head = [
            r
            for r in rows
            if r["model"] == model and r["work"] == "step" and r["precision"] == headline_precision
        ]
        if not head:
            continue
        seq = next(r["updates_per_s"] for r in head if r["setup"] == "sequential")
        best = max(head, key=lambda r: r["updates_per_s"])
        summary[model] = {
            "work": "one step of batch 8",
            "precision": headline_precision,
            "sequential_updates_per_s": seq,
            "best_updates_per_s": best["updates_per_s"],
            "best_setup": best["setup"],
            "best_speedup_vs_sequential": best["updates_per_s"] / seq,
        }
    summary["command"] = f"python benchmarks/gpu_throughput.py {' '.join(sys.argv[1:])}".strip()
    summary["repeats"] = args.repeats
    stem = args.name or ("gpu_throughput" if gpu else "gpu_throughput_cpu")
    write_report(summary, Path(args.out), stem)


def write_report(summary: dict[str, Any], out: Path, stem: str) -> None:
    """OUT/STEM.{json,md,png} from the summary (``--report JSON`` redraws them from a JSON)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summary["rows"]
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Client updates per second ({summary['device']})", "",
        f"`{summary['command']}`; {summary['clients_per_measurement']} clients per measurement, median of "
        f"{summary['repeats']} interleaved repeats.", "",
        "| model | precision | work | setup | updates/s | x sequential | GPU peak (GiB) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    sequential = {
        (x["model"], x["precision"], x["work"]): x["updates_per_s"]
        for x in rows
        if x["setup"] == "sequential"
    }
    for r in rows:
        seq = sequential[(r["model"], r["precision"], r["work"])]
        mem = f"{r['gpu_peak_gib']:.2f}" if r["gpu_peak_gib"] else "-"
        lines.append(f"| {r['model']} | {r['precision']} | {r['work']} | {r['setup']} | "
                     f"{r['updates_per_s']:.3g} | {r['updates_per_s'] / seq:.2f} | {mem} |")  # fmt: skip
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / f"{stem}.png", summary["device"])
    print(f"wrote {out / stem}.{{json,md,png}}")


def _plot(rows: list[dict[str, Any]], path: Path, device_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["precision"], r["work"]) for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, (model, precision, work) in zip(axes[0], groups, strict=True):
        sel = [r for r in rows if (r["model"], r["precision"], r["work"]) == (model, precision, work)]
        ax.barh([r["setup"] for r in sel], [r["updates_per_s"] for r in sel], color="tab:blue")
        ax.set_title(f"{model} {precision} {work}", fontsize=9)
        ax.set_xlabel("client updates / s")
        ax.tick_params(labelsize=7)
    fig.suptitle(device_name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
