"""Standard plots, a short markdown summary and a comparison table from runs' Parquet logs.

``fedlora-ray report RUN_DIR|SWEEP_ROOT [...] --out DIR`` draws accuracy and loss against round
and against cumulative uplink bits, the covariance term and the orthogonality error. Runs that
differ only in ``federation.seed`` form one group, drawn as its mean with a band of one
standard deviation. A sweep root (it holds runs.parquet) stands for all its started runs,
grouped by the sweep's varied keys. ``fedlora-ray compare`` prints one table row per group.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedlora_ray.atomic_write import atomic_path, write_bytes
from fedlora_ray.config import ConfigError
from fedlora_ray.rundir.run_log import has_logs, read_log
from fedlora_ray.storage import check_folder_out, read_json
from fedlora_ray.sweep import RUNS_FILE


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    rounds: pd.DataFrame
    values: dict[str, Any] | None = None  # a sweep run's varied values (runs.parquet), seed included

    @property
    def seed(self) -> int:
        return int(self.config["federation"]["seed"])


def save_figure(fig: Any, path: Path) -> None:
    """A matplotlib figure, written whole or not at all, in the format its suffix names."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip("."))


def load_run(path: str | Path, values: dict[str, Any] | None = None) -> Run:
    p = Path(path)
    if not has_logs(p):
        raise FileNotFoundError(f"{p} holds no rounds.parquet: not a run directory")
    config = read_json(str(p), "config.json", "restore it from the run's newest checkpoint with a resume")
    if config is None:
        raise FileNotFoundError(f"{p} holds no config.json: not a run directory")
    rounds = read_log(p)[0].to_pandas()
    rounds["cumulative_bits"] = rounds["uplink_bits"].cumsum()
    return Run(p, config, rounds, values)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Runs from run directories and sweep roots (each of a sweep's runs that has logged a round,
    with its varied values)."""
    runs = []
    for path in paths:
        p = Path(path)
        if (p / RUNS_FILE).is_file():
            table = pd.read_parquet(p / RUNS_FILE)
            started = [row for row in table.to_dict("records") if has_logs(p / row["run_id"])]
            if not started:
                raise FileNotFoundError(f"{p}: no run of this sweep has logged a round yet")
            runs += [
                load_run(p / row["run_id"], {k: v for k, v in row.items() if k != "run_id"})
                for row in started
            ]
        else:
            runs.append(load_run(p))
    return runs


def group_key(config: dict[str, Any]) -> str:
    """A label naming what differs between runs, minus the seed."""
    c = json.loads(json.dumps(config))
    c["federation"].pop("seed", None)
    c.pop("name", None)
    c.get("log", {}).pop("run_id", None)
    return json.dumps(c, sort_keys=True)


def sweep_key(run: Run, by: list[str] | None) -> str:
    """A run's group under ``by`` (its values of those keys), or a sweep run's varied values but
    the seed when ``by`` is empty."""
    if not by:
        assert run.values is not None
        by = [k for k in run.values if k != "seed"]
    return ", ".join(f"{k}={by_value(run, k)}" for k in by) or "all runs"


_NOT_A_GROUP = {"name", "log.run_id"}  # differ between any two runs, never a grouping


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """A config as {dotted field: value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def by_value(run: Run, key: str) -> Any:
    """``--by`` key ``key`` of a run: a sweep's varied key (an axis name or config key), 'seed',
    or any config field as section.field. KeyError when the run has no such key."""
    if run.values is not None and key in run.values:
        return run.values[key]
    if key == "seed":
        return run.seed
    leaves = _leaves(run.config)
    if key not in leaves:
        raise KeyError(key)
    value = leaves[key]
    return json.dumps(value) if isinstance(value, list) else value


def by_keys(runs: list[Run]) -> list[str]:
    """The keys worth grouping these runs by: the sweeps' varied keys, then the config fields
    whose values differ between the runs."""
    varied = list(dict.fromkeys(k for r in runs if r.values for k in r.values))
    flat = [_leaves(r.config) for r in runs]
    names = list(dict.fromkeys(k for f in flat for k in f))
    differ = [k for k in names if k not in _NOT_A_GROUP and len({json.dumps(f.get(k)) for f in flat}) > 1]
    return varied + [k for k in differ if k not in varied]


def check_by(runs: list[Run], by: list[str] | None) -> None:
    """Refuse a ``--by`` key that some run lacks, naming it and listing the keys these runs have
    that differ between them."""
    for key in by or []:
        lacking = []
        for run in runs:
            try:
                by_value(run, key)
            except KeyError:
                lacking.append(run)
        if lacking:
            keys = by_keys(runs)
            listed = ", ".join(repr(k) for k in keys) if keys else "none (the runs differ in no config field)"
            raise ConfigError(
                f"--by {key!r}: run {str(lacking[0].path)!r} has no such key. Allowed: a sweep's varied "
                f"key, 'seed', or a config field as section.field (`fedlora-ray fields` lists them); "
                f"the keys that vary between these runs: {listed}"
            )


def default_label(run: Run) -> str:
    comp = run.config.get("compression", {})
    method = comp.get("method", "none")
    rho = f" rho={comp.get('keep_ratio')}" if method != "none" else ""
    kind = run.config.get("algorithm", {}).get("kind", "fedavg")
    scheme = f"{kind} " if kind != "fedavg" else ""
    sampling = " independent" if run.config.get("sampling", {}).get("kind") == "independent" else ""
    name = run.config.get("name", run.path.name)
    return f"{name}: {scheme}{method}{rho} r={run.config['model']['lora_rank']}{sampling}"


def group_runs(runs: list[Run], by: list[str] | None = None) -> dict[str, list[Run]]:
    """Runs that differ only in their seed, together: by the sweep's varied keys for sweep runs,
    by the whole config otherwise."""
    check_by(runs, by)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = sweep_key(run, by) if run.values is not None or by else group_key(run.config)
        groups.setdefault(key, []).append(run)
    return groups


def labels_of(groups: dict[str, list[Run]], by: list[str] | None = None) -> dict[str, str]:
    return {k: k if v[0].values is not None or by else default_label(v[0]) for k, v in groups.items()}


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
    # written only when some run logged the column: causal LMs (§13), private runs (§14)
    ("perplexity_vs_round.png", "round", "test_perplexity", "held-out perplexity"),
    ("exact_match_vs_round.png", "round", "exact_match", "exact match of generated answers"),
    ("epsilon_vs_round.png", "round", "dp_epsilon", "epsilon spent (privacy.delta)"),
]
OPTIONAL = {"test_perplexity", "exact_match", "dp_epsilon"}


def plot_groups(groups: dict[str, list[Run]], labels: dict[str, str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for filename, x, y, ylabel in PLOTS:
        if y in OPTIONAL and not any(r.rounds[y].notna().any() for runs in groups.values() for r in runs):
            continue
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
        save_figure(fig, out / filename)
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


SUMMARY = "summary.md"
_SUMMARY_TITLE = "# Run report"


def check_report_out(out: str | Path) -> None:
    """Refuse, before any work, a report folder that is not the report's own: an existing file
    (or a file on its path), or a folder holding anything but what a report writes there (its
    PNGs, a summary.md that begins as a report's does, and the hidden .tmp files of an
    interrupted write). A report is rewritten in place; nothing else is ever overwritten
    [ours]."""
    out = Path(out)
    check_folder_out(out, "the report's folder")
    if not out.is_dir():
        return
    own = {SUMMARY, *(name for name, *_ in PLOTS)}
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            continue  # a write the report left unfinished
        if entry.name not in own or not entry.is_file():
            foreign.append(entry.name)
        elif entry.name == SUMMARY and not _is_report_summary(entry):
            foreign.append(f"{entry.name} (not a report's)")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(
            f"--out {str(out)!r} holds files a report did not write ({shown}); a report writes only "
            f"{SUMMARY} and its PNGs into its folder. Give a new or empty folder"
        )


def _is_report_summary(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(_SUMMARY_TITLE) + 1) == (_SUMMARY_TITLE + "\n").encode()
    except OSError:
        return False


def write_report(run_dirs: list[str | Path], out: str | Path, by: list[str] | None = None) -> Path:
    """Plots and ``summary.md`` for the runs (or sweeps) into ``out``, grouped by ``by`` when
    given (``compare_table``'s keys); returns the summary's path."""
    check_report_out(out)
    runs = load_runs(run_dirs)
    groups = group_runs(runs, by)
    labels = labels_of(groups, by)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = plot_groups(groups, labels, out)
    lines = [_SUMMARY_TITLE, "", *summary_table(groups, labels), ""]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    write_bytes(out / SUMMARY, ("\n".join(lines) + "\n").encode())
    return out / SUMMARY


def time_to_accuracy(run: Run, target: float) -> float:
    """Simulated seconds until the test accuracy first reaches ``target`` (inf if never)."""
    hit = run.rounds[run.rounds["test_accuracy"] >= target]
    return float(hit["sim_time_s"].iloc[0]) if len(hit) else float("inf")


def last_k_accuracy(run: Run, k: int) -> float:
    values = run.rounds["test_accuracy"].dropna()
    return float(values.iloc[-k:].mean()) if len(values) else float("nan")


def compare_table(
    paths: list[str | Path], last: int = 3, target: float | None = None, by: list[str] | None = None
) -> str:
    """One markdown row per group of runs (mean ± std over its seeds): final and last-``last``
    accuracy, total uplink bits, and simulated time to ``target`` accuracy (default: 90% of the
    lowest best mean accuracy among the groups, so that every group can reach it)."""
    if last < 1:
        raise ConfigError(f"--last {last}: must be >= 1")
    if target is not None and not 0 <= target <= 1:
        raise ConfigError(f"--target {target:g}: an accuracy, in [0, 1] (0.8 for 80%)")
    groups = group_runs(load_runs(paths), by)
    labels = labels_of(groups, by)
    if target is None:
        bests = [np.mean([r.rounds["test_accuracy"].max() for r in runs]) for runs in groups.values()]
        target = 0.9 * float(np.nanmin(bests)) if bests else 0.0

    def cell(values: list[float], fmt: str) -> str:
        arr = np.array(values, dtype=float)
        return f"{arr.mean():{fmt}} ± {arr.std():{fmt}}" if len(arr) > 1 else f"{arr.mean():{fmt}}"

    lines = [
        f"| group | runs | rounds | final acc | last-{last} acc | uplink Gbit | sim s to acc {target:.3f} |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, runs in groups.items():
        times = [time_to_accuracy(r, target) for r in runs]
        reached = [t for t in times if np.isfinite(t)]
        to_target = cell(reached, ".3g") if reached else "not reached"
        if reached and len(reached) < len(times):
            to_target += f" ({len(reached)}/{len(times)} reached)"
        lines.append(
            f"| {labels[key]} | {len(runs)} | {cell([r.rounds['round'].max() for r in runs], '.0f')} | "
            f"{cell([final_value(r, 'test_accuracy') for r in runs], '.4f')} | "
            f"{cell([last_k_accuracy(r, last) for r in runs], '.4f')} | "
            f"{cell([r.rounds['uplink_bits'].sum() / 1e9 for r in runs], '.3f')} | {to_target} |"
        )
    return "\n".join(lines)
