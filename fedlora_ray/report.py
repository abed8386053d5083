"""Standard plots and a short markdown summary from run directories' Parquet logs.

``fedlora-ray report RUN_DIR [RUN_DIR ...] --out DIR`` draws accuracy and loss against round
and against cumulative uplink bits, the covariance term and the orthogonality error. Runs that
differ only in ``federation.seed`` form one group, drawn as its mean with a band of one
standard deviation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    rounds: pd.DataFrame

    @property
    def seed(self) -> int:
        return int(self.config["federation"]["seed"])


def load_run(path: str | Path) -> Run:
    p = Path(path)
    if not (p / "rounds.parquet").is_file():
        raise FileNotFoundError(f"{p} holds no rounds.parquet: not a run directory")
    config = json.loads((p / "config.json").read_text())
    rounds = pd.read_parquet(p / "rounds.parquet")
    rounds["cumulative_bits"] = rounds["uplink_bits"].cumsum()
    return Run(p, config, rounds)


def group_key(config: dict[str, Any]) -> str:
    """A label naming what differs between runs, minus the seed."""
    c = json.loads(json.dumps(config))
    c["federation"].pop("seed", None)
    c.pop("name", None)
    return json.dumps(c, sort_keys=True)


def default_label(run: Run) -> str:
    comp = run.config.get("compression", {})
    method = comp.get("method", "none")
    rho = f" rho={comp.get('keep_ratio')}" if method != "none" else ""
    kind = run.config.get("algorithm", {}).get("kind", "fedavg")
    scheme = f"{kind} " if kind != "fedavg" else ""
    sampling = " independent" if run.config.get("sampling", {}).get("kind") == "independent" else ""
    name = run.config.get("name", run.path.name)
    return f"{name}: {scheme}{method}{rho} r={run.config['model']['lora_rank']}{sampling}"


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run.config), []).append(run)
    return groups


def mean_curve(runs: list[Run], x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std of column ``y`` over the runs, on the rounds every run has a value."""
    columns = list(dict.fromkeys(["round", x, y]))  # x may be the round itself
    frames = [r.rounds[columns].dropna().set_index("round", drop=False) for r in runs]
    common = sorted(set.intersection(*(set(f.index) for f in frames)))
    xs = np.mean([f.loc[common, x].to_numpy(dtype=float) for f in frames], axis=0)
    ys = np.array([f.loc[common, y].to_numpy(dtype=float) for f in frames])
    return xs, ys.mean(axis=0), ys.std(axis=0)


def final_value(run: Run, column: str) -> float:
    values = run.rounds[column].dropna()
    return float(values.iloc[-1]) if len(values) else float("nan")


PLOTS = [
    ("accuracy_vs_round.png", "round", "test_accuracy", "test accuracy"),
    ("accuracy_vs_bits.png", "cumulative_bits", "test_accuracy", "test accuracy"),
    ("accuracy_vs_time.png", "sim_time_s", "test_accuracy", "test accuracy"),
    ("loss_vs_round.png", "round", "train_loss", "train loss"),
    ("loss_vs_bits.png", "cumulative_bits", "train_loss", "train loss"),
    ("covariance_vs_round.png", "round", "covariance", "covariance term"),
    ("orthogonality_vs_round.png", "round", "orth_error_a", "orthogonality error of A (B dashed)"),
]


def plot_groups(groups: dict[str, list[Run]], labels: dict[str, str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for filename, x, y, ylabel in PLOTS:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, runs in groups.items():
            if runs[0].rounds[y].notna().sum() == 0:
                continue
            xs, mean, std = mean_curve(runs, x, y)
            (line,) = ax.plot(xs, mean, label=labels[key])
            ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=line.get_color())
            if y == "orth_error_a" and runs[0].rounds["orth_error_b"].notna().any():
                xs_b, mean_b, _ = mean_curve(runs, x, "orth_error_b")
                ax.plot(xs_b, mean_b, "--", color=line.get_color())
        xlabel = {
            "cumulative_bits": "cumulative uplink bits",
            "sim_time_s": "simulated time (s, mean over seeds)",
        }
        ax.set_xlabel(xlabel.get(x, x))
        ax.set_ylabel(ylabel)
        if x == "cumulative_bits":
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=110)
        plt.close(fig)
        written.append(out / filename)
    return written


def summary_table(groups: dict[str, list[Run]], labels: dict[str, str]) -> list[str]:
    lines = [
        "| run | seeds | final test accuracy | best test accuracy | final covariance | uplink Gbit "
        "| simulated time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, runs in groups.items():
        final = np.array([final_value(r, "test_accuracy") for r in runs])
        best = np.array([r.rounds["test_accuracy"].max() for r in runs])
        cov = np.array([final_value(r, "covariance") for r in runs])
        bits = np.array([r.rounds["uplink_bits"].sum() / 1e9 for r in runs])
        sim = np.array([r.rounds["sim_time_s"].iloc[-1] for r in runs])
        lines.append(
            f"| {labels[key]} | {len(runs)} | {final.mean():.3f} ± {final.std():.3f} | "
            f"{best.mean():.3f} ± {best.std():.3f} | {cov.mean():.3g} | {bits.mean():.3f} | "
            f"{sim.mean():.1f} |"
        )
    return lines


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Plots and ``summary.md`` for the runs into ``out``; returns the summary's path."""
    runs = [load_run(p) for p in run_dirs]
    groups = group_runs(runs)
    labels = {k: default_label(v[0]) for k, v in groups.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = plot_groups(groups, labels, out)
    lines = ["# Run report", "", *summary_table(groups, labels), ""]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return out / "summary.md"
