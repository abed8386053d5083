"""The adaptive controller's solve (docs/algorithms.md §7) against the number of clients N.

The problem is the prototype of docs/algorithms.md §7: compute times lognormal (median 1 s,
sigma 1), the default channel of section 4 at 20 MHz with each client's share Bw / K, a 3.5 Mbit
full upload, sketch options {1/8, 1/4, 1/2, 1}, a0 = 1, a1 = 20 * 100 / N, a2 = 0.5, omega = 0.7,
q_min = K / (10 N). K is N / 10 unless ``--k`` fixes it. Reports the wall and CPU time of one
solve, its outer iterations, and the objective's gain over uniform q = K / N with s = 1; for N up
to ``--reference-max`` also the plain-loop solver the fast one replaced
(``fedlora_ray.control.adaptive_reference.solve``), its time, and how the plans compare (largest
|q - q_ref|, s equal, and the objective's relative gap (fast - reference) / reference, which
tests/test_adaptive.py bounds by OBJECTIVE_RTOL = 1e-6). The solve runs once per training run.

Rows are merged into benchmarks/results/adaptive_solver.json by (N, K), and the table
benchmarks/results/adaptive_solver.md and the plot adaptive_solver.png are drawn from all of them,
so several runs add up (``--report`` only redraws them):

    python benchmarks/adaptive_solver.py --sizes 50 100 200 500 1000 2000 5000 10000 --reference-max 1000
    python benchmarks/adaptive_solver.py --k 100 --sizes 500 1000 2000 5000 10000 --reference-max 2000
    python benchmarks/adaptive_solver.py --k 100 --sizes 100000
    python benchmarks/adaptive_solver.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedlora_ray.channel import Uplink  # noqa: E402
from fedlora_ray.config import ChannelConfig  # noqa: E402
from fedlora_ray.control import adaptive_reference  # noqa: E402
from fedlora_ray.control.adaptive import AdaptivePlan, AdaptiveProblem, solve  # noqa: E402

OUT = ROOT / "benchmarks" / "results"


def problem(n: int, k: int) -> AdaptiveProblem:
    rng = np.random.default_rng(1)
    snr = Uplink(ChannelConfig(), n, 0).mean_snr
    return AdaptiveProblem(
        share=np.full(n, 1 / n), grad_sq=np.ones(n), tau=rng.lognormal(0, 1, n),
        upload=3.5e6 / (20e6 * np.log2(1 + snr) / k), omega=0.7, options=(0.125, 0.25, 0.5, 1.0),
        k=float(k), q_min=0.1 * k / n, q_max=1.0, a0=1.0, a1=20.0 * 100 / n, a2=0.5,
    )  # fmt: skip


def timed(fn, prob: AdaptiveProblem) -> tuple[AdaptivePlan, float, float]:
    """The plan, wall seconds and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    plan = fn(prob)
    return plan, time.perf_counter() - wall, time.process_time() - cpu


def measure(n: int, k: int, reference: bool) -> dict:
    prob = problem(n, k)
    load = os.getloadavg()[0]
    plan, wall, cpu = timed(solve, prob)
    uniform = prob.objective(np.full(n, prob.k / n), np.ones(n))
    row = {
        "N": n, "K": k, "solve_seconds": wall, "solve_cpu_seconds": cpu, "iterations": plan.iterations,
        "objective": plan.objective, "gain_over_uniform": uniform / plan.objective,
        "corr_q_compute": float(np.corrcoef(plan.q, prob.tau)[0, 1]),
        "clients_below_s1": int((plan.s < 1).sum()),
        "load_average_1min": load,
    }  # fmt: skip
    if reference:
        ref, ref_wall, ref_cpu = timed(adaptive_reference.solve, prob)
        row.update(
            reference_seconds=ref_wall, reference_cpu_seconds=ref_cpu, speedup_cpu=ref_cpu / cpu,
            max_abs_q_difference=float(np.max(np.abs(plan.q - ref.q))),
            s_equal=bool(np.array_equal(plan.s, ref.s)),
            objective_relative_difference=(plan.objective - ref.objective) / abs(ref.objective),
        )  # fmt: skip
    return row


def describe(row: dict) -> str:
    text = (
        f"N={row['N']:6d} K={row['K']:5d}: solve {row['solve_seconds']:8.2f} s wall, "
        f"{row['solve_cpu_seconds']:8.2f} s CPU, {row['iterations']} iterations, "
        f"gain {row['gain_over_uniform']:.2f}x, corr(q, tau) {row['corr_q_compute']:.2f}, "
        f"{row['clients_below_s1']} clients with s < 1"
    )
    if "reference_seconds" in row:
        text += (
            f"; plain loops {row['reference_cpu_seconds']:.2f} s CPU ({row['speedup_cpu']:.1f}x), "
            f"max |dq| {row['max_abs_q_difference']:.1e}, s equal {row['s_equal']}, "
            f"objective gap (fast - ref) / ref {row['objective_relative_difference']:+.1e}"
        )
    return text


def write(rows: list[dict], meta: dict) -> None:
    rows = sorted(rows, key=lambda r: (r["K"] != r["N"] // 10, r["K"], r["N"]))
    (OUT / "adaptive_solver.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# Adaptive controller: one solve against N", "",
        f"`python benchmarks/adaptive_solver.py` on {meta['machine']} ({meta['cpus']} CPUs shared with other "
        "work, one core used, numpy); the CPU column is this process's CPU time, which the machine's load "
        "does not inflate. \"Plain loops\" is the reference solver "
        "(`fedlora_ray.control.adaptive_reference.solve`), run where it finishes in a few minutes; the "
        "objective gap is (fast - reference) / reference (rows from before the fast solver was checked "
        "on the objective alone give its absolute value).", "",
        "| N | K | solve wall (s) | solve CPU (s) | outer iterations | gain over uniform q, s = 1 "
        "| corr(q, compute) | clients with s < 1 | plain loops CPU (s) | speed-up (CPU) "
        "| max abs q difference | same s | objective gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        ref = (
            f"{r['reference_cpu_seconds']:.1f} | {r['speedup_cpu']:.1f}x | {r['max_abs_q_difference']:.0e} | "
            f"{'yes' if r['s_equal'] else 'no'} | {r['objective_relative_difference']:.0e}"
            if "reference_seconds" in r
            else " | | | | "
        )
        lines.append(
            f"| {r['N']} | {r['K']} | {r['solve_seconds']:.2f} | {r['solve_cpu_seconds']:.2f} | "
            f"{r['iterations']} | "
            f"{r['gain_over_uniform']:.2f} | {r['corr_q_compute']:.2f} | {r['clients_below_s1']} | {ref} |"
        )
    (OUT / "adaptive_solver.md").write_text("\n".join(lines) + "\n")
    plot(rows)


def plot(rows: list[dict]) -> None:
    """CPU seconds of one solve against N, fast and plain loops, for K = N / 10 and fixed K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = {"K = N / 10": [r for r in rows if r["K"] == r["N"] // 10]}
    for k in sorted({r["K"] for r in rows if r["K"] != r["N"] // 10}):
        series[f"K = {k}"] = [r for r in rows if r["K"] == k]
    for (label, group), color in zip(series.items(), ("C0", "C1", "C2", "C3")):
        group = sorted(group, key=lambda r: r["N"])
        ax.plot([r["N"] for r in group], [r["solve_cpu_seconds"] for r in group], "o-", color=color,
                label=f"fast solver, {label}")  # fmt: skip
        ref = [r for r in group if "reference_cpu_seconds" in r]
        if ref:
            ax.plot([r["N"] for r in ref], [r["reference_cpu_seconds"] for r in ref], "s--", color=color,
                    label=f"plain loops, {label}")  # fmt: skip
    ax.axhline(60, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="clients N", ylabel="CPU seconds of one solve")
    ax.set_title("Adaptive controller: one solve (docs/algorithms.md §7)")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "adaptive_solver.png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    ap.add_argument("--k", type=int, default=None, help="expected participants per round (default N / 10)")
    ap.add_argument(
        "--reference-max", type=int, default=0, help="also run the plain-loop solver up to this N"
    )
    ap.add_argument("--report", action="store_true", help="only redraw the table and plot from the JSON")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "adaptive_solver.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = {(r["N"], r["K"]): r for r in old if "solve_cpu_seconds" in r}  # rows of this script's format
    meta = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
    }  # fmt: skip
    if args.report:
        write(list(rows.values()), json.loads(path.read_text())["meta"])
        return
    for n in args.sizes:
        k = args.k if args.k is not None else n // 10
        row = measure(n, k, n <= args.reference_max)
        print(describe(row), flush=True)
        rows[(n, k)] = row
        write(list(rows.values()), meta)


if __name__ == "__main__":
    main()
