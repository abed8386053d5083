"""The adaptive controller's solve (docs/algorithms.md §7) against the number of clients N.

For N in {50, 100, 200, 500, 1000} with K = N / 10: compute times lognormal (median 1 s,
sigma 1), the default channel of section 4 at 20 MHz, a 3.5 Mbit full upload, sketch options
{1/8, 1/4, 1/2, 1}, a0 = 1, a1 = 20, a2 = 0.5, omega = 0.7 (the prototype of docs/algorithms.md §7).
Reports the wall time of one solve, its outer iterations, and the objective's gain over uniform
q = K / N with s = 1. The solve runs once per training run. Writes
benchmarks/results/adaptive_solver.{json,md}.

    python benchmarks/adaptive_solver.py [--sizes 50 100 200 500 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedlora_ray.channel import Uplink  # noqa: E402
from fedlora_ray.config import ChannelConfig  # noqa: E402
from fedlora_ray.control.adaptive import AdaptiveProblem, solve  # noqa: E402


def problem(n: int) -> AdaptiveProblem:
    k = n // 10
    rng = np.random.default_rng(1)
    snr = Uplink(ChannelConfig(), n, 0).mean_snr
    return AdaptiveProblem(
        share=np.full(n, 1 / n), grad_sq=np.ones(n), tau=rng.lognormal(0, 1, n),
        upload=3.5e6 / (20e6 * np.log2(1 + snr) / k), omega=0.7, options=(0.125, 0.25, 0.5, 1.0),
        k=float(k), q_min=0.1 * k / n, q_max=1.0, a0=1.0, a1=20.0 * 100 / n, a2=0.5,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        prob = problem(n)
        start = time.perf_counter()
        plan = solve(prob)
        seconds = time.perf_counter() - start
        uniform = prob.objective(np.full(n, prob.k / n), np.ones(n))
        row = {
            "N": n, "K": int(prob.k), "solve_seconds": seconds, "iterations": plan.iterations,
            "gain_over_uniform": uniform / plan.objective,
            "corr_q_compute": float(np.corrcoef(plan.q, prob.tau)[0, 1]),
            "clients_below_s1": int((plan.s < 1).sum()),
        }  # fmt: skip
        rows.append(row)
        print(
            f"N={n:5d} K={row['K']:4d}: solve {seconds:7.2f} s, {plan.iterations} iterations, "
            f"gain {row['gain_over_uniform']:.2f}x, corr(q, tau) {row['corr_q_compute']:.2f}, "
            f"{row['clients_below_s1']} clients with s < 1",
            flush=True,
        )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    (out / "adaptive_solver.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# Adaptive controller: one solve against N", "",
        f"`python benchmarks/adaptive_solver.py` on {meta['machine']} (one core, numpy).", "",
        "| N | K | solve (s) | outer iterations | objective gain over uniform q, s = 1 | corr(q, compute) | clients with s < 1 |",  # noqa: E501
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['N']} | {r['K']} | {r['solve_seconds']:.2f} | {r['iterations']} | "
            f"{r['gain_over_uniform']:.2f} | {r['corr_q_compute']:.2f} | {r['clients_below_s1']} |"
        )
    (out / "adaptive_solver.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
