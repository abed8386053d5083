"""Round overhead of the runtimes against a bare torch loop (the physical limit on this machine).

For K clients per round on the embedded default (MiniLM + LoRA on WordNet), time one round's
training and aggregation on:
  (a) bare:    one process, plain torch: load the global factors, AdamW, the batches, average;
  (b) serial:  the SerialBackend under FederatedRun;
  (c) ray-1 / ray-2: the RayBackend with 1 and 2 client actors under FederatedRun.
Evaluation is off in all of them. Equal threads: (a), (b) and ray-1 use T threads, ray-2 uses
two actors of T/2. All four live in this one run and their rounds are interleaved, the order
rotating each round, so that machine drift hits them alike. Rounds 1..warmup are discarded;
the median of the rest is reported, with ratios to (a), printed and written to
benchmarks/results/round_overhead.{json,md}.

    python benchmarks/round_overhead.py [--rounds 4] [--warmup 1] [--threads 2] [--set a.b=v ...]
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

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for k, v in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}.items():
    os.environ.setdefault(k, v)

from fedlora_ray.algorithm.sampling import client_seed, sample_clients  # noqa: E402
from fedlora_ray.components import load_run_config  # noqa: E402
from fedlora_ray.config import RunConfig  # noqa: E402
from fedlora_ray.data import load_wordnet, partition_indices  # noqa: E402
from fedlora_ray.engine.run import FederatedRun  # noqa: E402
from fedlora_ray.engine.serial import SerialBackend  # noqa: E402
from fedlora_ray.lora import load_tokenizer  # noqa: E402
from fedlora_ray.tasks import model_family  # noqa: E402
from fedlora_ray.tasks.bert import tokenize  # noqa: E402


class BareLoop:
    """The same clients and batches with no framework: the floor a round can reach."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        train, _ = load_wordnet(cfg.data)
        self.data = tokenize(load_tokenizer(cfg.model), train.texts, train.labels, cfg.model.max_length)
        fed = cfg.federation
        self.parts = partition_indices(train.labels, fed.num_clients, cfg.data, fed.seed)
        self.model = model_family(cfg.model.name).build(cfg.model, len(train.label_names), fed.seed)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.global_state = [p.detach().clone() for p in self.params]
        self.round = 0

    def run_round(self) -> None:
        fed, model, params = self.cfg.federation, self.model, self.params
        self.round += 1
        t = self.round
        sums = [torch.zeros_like(g) for g in self.global_state]
        clients = sample_clients(fed.seed, t, fed.num_clients, fed.clients_per_round)
        total = sum(len(self.parts[i]) for i in clients)
        for i in clients:
            with torch.no_grad():
                for p, g in zip(params, self.global_state):
                    p.copy_(g)
            opt = torch.optim.AdamW(params, lr=fed.lr, weight_decay=fed.weight_decay)
            seed = client_seed(fed.seed, t, int(i))
            gen = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            idx = torch.tensor(self.parts[i])
            model.train()
            for _ in range(fed.local_epochs):
                order = idx[torch.randperm(len(idx), generator=gen)]
                for s in range(0, len(order), fed.batch_size):
                    (ids, mask), y = self.data.batch(order[s : s + fed.batch_size], torch.device("cpu"))
                    loss = F.cross_entropy(model(ids, mask), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                for acc, p in zip(sums, params):
                    acc.add_(p, alpha=len(self.parts[i]) / total)
        self.global_state = sums


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--only", default="bare,serial,ray-1,ray-2")
    args = ap.parse_args()
    t = args.threads
    base = [
        "federation.clients_per_round=10",
        f"federation.rounds={args.rounds}",
        f"federation.eval_every={10**6}",
        "runtime.progress=false",
        *args.overrides,
    ]

    def cfg_for(*extra: str) -> RunConfig:
        c = load_run_config(None, [*base, *extra])
        # the last round is always evaluated; push it past the rounds we time
        return load_run_config(None, [*base, *extra, f"federation.rounds={c.federation.rounds + 1}"])

    # Every runtime stays alive and the rounds are interleaved (the order rotating each round),
    # so that the machine's drift hits all of them alike. The in-process runtimes share T
    # threads; idle Ray actors take no CPU.
    only = args.only.split(",")
    runtimes: dict[str, object] = {}
    if "bare" in only:
        torch.set_num_threads(t)
        runtimes["bare"] = BareLoop(cfg_for(f"runtime.torch_threads={t}"))
    if "serial" in only:
        cfg = cfg_for(f"runtime.torch_threads={t}", "runtime.backend=serial")
        runtimes["serial"] = FederatedRun(cfg, SerialBackend(cfg), None, progress=None)
    ray_runs = [(n, th) for n, th in ((1, t), (2, max(1, t // 2))) if f"ray-{n}" in only]
    backends = []
    if ray_runs:
        import ray

        from actors.backend import RayBackend

        ray.init(address="local", include_dashboard=False, num_cpus=2 * max(2, t), log_to_driver=False)
        for n, threads in ray_runs:
            cfg = cfg_for(
                "runtime.backend=ray",
                f"runtime.num_actors={n}",
                f"runtime.torch_threads={threads}",
                f"runtime.num_cpus_per_actor={t / n}",
            )
            backends.append(RayBackend(cfg))
            runtimes[f"ray-{n}"] = FederatedRun(cfg, backends[-1], None, progress=None)
    names = list(runtimes)
    results: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runtimes[k].run_round()  # type: ignore[attr-defined]
            results[k].append(time.perf_counter() - start)
        print(f"round {r + 1}: " + "  ".join(f"{k} {results[k][-1]:.2f}s" for k in names), flush=True)
    for b in backends:
        b.close()
    if backends:
        ray.shutdown()

    median = {k: statistics.median(v[args.warmup :]) for k, v in results.items()}
    ref = median.get("bare")
    rows = []
    print(f"{'runtime':<8} {'median s/round':>15} {'ratio to bare':>14}   rounds (s)")
    for k, m in median.items():
        ratio = m / ref if ref else float("nan")
        rows.append({"runtime": k, "median_seconds": m, "ratio_to_bare": ratio, "rounds": results[k]})
        print(f"{k:<8} {m:>15.3f} {ratio:>14.3f}   {' '.join(f'{x:.2f}' for x in results[k])}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "round_overhead",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": t,
        "clients_per_round": 10,
        "warmup_rounds": args.warmup,
        "overrides": base,
        "results": rows,
    }
    (out / "round_overhead.json").write_text(json.dumps(meta, indent=2))
    lines = [
        "# Round overhead (benchmarks/round_overhead.py)",
        "",
        f"{meta['date']}, {meta['machine']}; K = 10, {t} threads per runtime (ray-2: 2 x {max(1, t // 2)}); "
        f"median over rounds {args.warmup + 1}..{args.rounds}.",
        "",
        "| runtime | median s/round | ratio to bare |",
        "|---|---|---|",
        *[f"| {r['runtime']} | {r['median_seconds']:.3f} | {r['ratio_to_bare']:.3f} |" for r in rows],
    ]
    (out / "round_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
