"""Seed Fig. 2: the cost of SOFT's selection against forming B A and taking its SVD.

For one LoRA module with d = k, time (a) SOFT: rank scores, per-rank budgets and the
within-rank top-k on the factors (no product, no SVD), and (b) the SVD route a client would
otherwise need: B A (d x d) and its thin SVD. Sweeps d in {256, 768, 2048, 4096} at r = 16 and
r in {4, 8, 16, 32, 64} at d = 768; keep ratio 0.1. Median of repeats (fewer for the slow SVDs),
torch threads as given. Writes benchmarks/results/selection_cost.{json,md,png}.

    python benchmarks/selection_cost.py [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedlora_ray.compress import module_budget  # noqa: E402
from fedlora_ray.compress.soft import select  # noqa: E402
from fedlora_ray.config import CompressionConfig  # noqa: E402


def _time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(d: int, r: int, repeats: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    b, a = torch.randn(d, r, generator=g), torch.randn(r, d, generator=g)
    ub, ua = torch.randn(d, r, generator=g), torch.randn(r, d, generator=g)
    cfg = CompressionConfig(method="soft", keep_ratio=0.1)
    budget = module_budget(0.1, d, d, r)
    soft = _time(lambda: select(ub, ua, budget, b, a, cfg, g), repeats)
    svd_repeats = max(1, repeats // (1 + d // 1024))
    svd = _time(lambda: torch.linalg.svd(b @ a, full_matrices=False), svd_repeats)
    return {"d": d, "r": r, "soft_seconds": soft, "svd_seconds": svd, "speedup": svd / soft}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    by_d = [measure(d, 16, args.repeats) for d in (256, 768, 2048, 4096)]
    by_r = [measure(768, r, args.repeats) for r in (4, 8, 16, 32, 64)]
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "selection_cost",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
        "by_d_at_r16": by_d,
        "by_r_at_d768": by_r,
    }
    (out / "selection_cost.json").write_text(json.dumps(meta, indent=2))
    lines = [
        "# SOFT selection vs product + SVD (benchmarks/selection_cost.py, seed Fig. 2)",
        "",
        f"{meta['date']}, {meta['machine']}; one module with d = k, keep ratio 0.1; median times.",
        "",
        "| d | r | SOFT selection (ms) | B A + SVD (ms) | SVD / SOFT |",
        "|---|---|---|---|---|",
    ]
    for row in by_d + by_r:
        lines.append(
            f"| {row['d']} | {row['r']} | {1e3 * row['soft_seconds']:.3f} | "
            f"{1e3 * row['svd_seconds']:.1f} | {row['speedup']:.0f}x |"
        )
    (out / "selection_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, rows, key, label in (
        (axes[0], by_r, "r", "LoRA rank r (d = 768)"),
        (axes[1], by_d, "d", "d = k (r = 16)"),
    ):
        xs = [row[key] for row in rows]
        ax.plot(xs, [row["svd_seconds"] * 1e3 for row in rows], "o-", label="form B A + SVD")
        ax.plot(xs, [row["soft_seconds"] * 1e3 for row in rows], "s-", label="SOFT selection")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("time per module (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Selection cost: SOFT vs product + SVD")
    fig.tight_layout()
    fig.savefig(out / "selection_cost.png", dpi=120)


if __name__ == "__main__":
    main()
