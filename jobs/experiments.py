"""The SOFT paper's experiments on the embedded default: each is a sweep spec in jobs/sweeps/.

    python jobs/experiments.py fig3  [--seeds 0 1 2] [--out runs/exp] [--set a.b=v ...] [--base CONFIG]
    python jobs/experiments.py fig3v ...   # two SOFT variants beside Fig. 3 (same --out: one table)
    python jobs/experiments.py fig4  ...   # orthogonal regulariser: heatmaps + accuracy
    python jobs/experiments.py fig56 ...   # covariance and accuracy against shards per client
    python jobs/experiments.py fig3c ...   # TSFA against OSFA at fixed ranks
    python jobs/experiments.py vtradeoff ... # TSFA's V trade-off
    python jobs/experiments.py wallclock ... # docs/algorithms.md §7: simulated time to a target accuracy
    python jobs/experiments.py e0 ...      # issue 21: the project's protocol (update mode, EF for all)
    python jobs/experiments.py e1 ...      # issue 21: error feedback for SOFT only
    python jobs/experiments.py e2 ... [--keeps 0.25 0.5]   # issue 21: factor mode, with and without EF
    python jobs/experiments.py e3 ... --set ...            # issue 21: the paper's batch 8, 1 epoch
    python jobs/experiments.py e4 [--out runs/exp]         # issue 21: product errors on saved adapters
    python jobs/experiments.py privacy ...  # issue 22: accuracy against epsilon (central DP)
    python jobs/experiments.py llm [--methods ilora soft flasc] ...  # issue 20: the methods on the LLM
    python jobs/experiments.py summarize FIG [--out runs/exp]   # tables/plots only (budget: no runs)

e0-e3 share one --out: their summary (FIG e) is one protocol x method table of all of them. e4
trains nothing: it reads the checkpoints of e0's ILoRA and SOFT runs under --out.

Each command runs its spec with `fedlora-ray sweep` (on the Ray cluster in RAY_ADDRESS, or a local
one: several packed serial runs at once, CUDA when a task gets a GPU), which skips finished runs
and resumes started ones, then writes its tables and PNGs to docs/experiments/ (FIG.md beside
the images). The specs' base is jobs/configs/quickstart.yaml (MiniLM + LoRA on WordNet, 100
clients, 10 per round, shards); `--base jobs/configs/vision_quickstart.yaml` runs the same on the
vision default.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedlora_ray.atomic_write import write_bytes  # noqa: E402
from fedlora_ray.report import Run, final_value, load_run, mean_curve, save_figure  # noqa: E402

BASE = ROOT / "jobs" / "configs" / "quickstart.yaml"
DOCS = ROOT / "docs" / "experiments"
SWEEPS = ROOT / "jobs" / "sweeps"
# the runs' names and values come from the specs in jobs/sweeps/; these name what the tables show
METHODS = ["none", "soft", "flasc", "rlora", "hetlora", "fedlodrop"]
SOFT_VARIANTS = ["softraw", "softscaled"]  # fig3v.yaml: two SOFT variants (docs/algorithms.md §2)
LABEL = {"none": "ILoRA (dense)", "soft": "SOFT", "flasc": "FLASC", "rlora": "RLoRA", "hetlora": "HetLoRA",
         "fedlodrop": "FedLoDrop", "softraw": "SOFT, raw ranking",
         "softscaled": "SOFT, scaled penalty"}  # fmt: skip
FIG3_RANKS = (8, 16)
KEEP = 0.1
FIG4_LAMBDAS = (0.0, 1e-3, 1e-2)
WALL_SCHEMES = ["adaptive", "adaptiveq", "fslora", "fslora4", "hetlora", "ffa", "fedavg"]  # wallclock.yaml
WALL_LABEL = {"adaptive": "Adaptive (FSLoRA + independent q, s)", "adaptiveq": "Adaptive q only (s = 1)",
              "fslora": "FSLoRA, uniform sampling",
              "fslora4": "FSLoRA, uniform, s in {1/8..1}",
              "hetlora": "HetLoRA", "ffa": "FFA-LoRA", "fedavg": "FedAvg-LoRA, full rank"}  # fmt: skip
WALL_TARGETS = (0.4, 0.5, 0.55)
WALL_PRIMARY = 0.5
TAG = ""  # --tag: a variant's docs go to FIG-TAG.md and FIG-TAG_*.png


def _stem(name: str) -> str:
    fig, _, rest = name.partition("_")
    return f"{fig}-{TAG}_{rest}" if TAG else name


def _runs(out: Path, prefix: str) -> list[Run]:
    runs = [load_run(p) for p in sorted(out.glob(f"{prefix}*")) if (p / "summary.json").exists()]
    if not runs:
        raise SystemExit(f"no finished run named {prefix}* under {out}: run its sweep first")
    return runs


def _tail_accuracy(run: Run, evals: int = 3) -> float:
    """Mean of the last few evaluations: non-IID accuracy swings from round to round."""
    return float(run.rounds["test_accuracy"].dropna().iloc[-evals:].mean())


def _fmt(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _plot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _method(run: Run) -> str:
    """The Fig. 3 line a run belongs to: its compression method, or a SOFT variant."""
    comp = run.config["compression"]
    if comp["method"] == "soft" and comp.get("soft_selection") == "raw":
        return "softraw"
    if comp["method"] == "soft" and comp.get("orth_penalty") == "scaled":
        return "softscaled"
    return str(comp["method"])


def summarize_fig3(out: Path) -> list[str]:
    plt = _plot()
    runs = _runs(out, "fig3-")
    lines = ["## Seed Fig. 3(a)/(b): six methods at the same keep ratio", "",
             f"Keep ratio rho = {KEEP} for every sparsifier (ILoRA sends everything). Mean ± std over seeds "
             "of the final test accuracy and of the mean of the last three evaluations.", "",
             "| rank | method | seeds | final accuracy | last-3 accuracy | uplink Mbit / client / round |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    fig, axes = plt.subplots(1, len(FIG3_RANKS), figsize=(12, 4.2), sharey=True)
    for ax, r in zip(np.atleast_1d(axes), FIG3_RANKS):
        for m in [*METHODS, *SOFT_VARIANTS]:
            group = [x for x in runs if x.config["model"]["lora_rank"] == r and _method(x) == m]
            if not group:
                continue
            xs, mean, std = mean_curve(group, "round", "test_accuracy")
            (line,) = ax.plot(xs, mean, label=LABEL[m], linestyle=":" if m in SOFT_VARIANTS else "-")
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15, color=line.get_color())
            mbit = np.mean([g.rounds["uplink_bits"].mean() / g.rounds["sampled"].mean() / 1e6 for g in group])
            lines.append(
                f"| {r} | {LABEL[m]} | {len(group)} | {_fmt([final_value(g, 'test_accuracy') for g in group])} | "  # noqa: E501
                f"{_fmt([_tail_accuracy(g) for g in group])} | {mbit:.3f} |"
            )
        ax.set_title(f"LoRA rank {r}, rho = {KEEP}")
        ax.set_xlabel("round")
        ax.grid(True, alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, DOCS / f"{_stem('fig3_accuracy')}.png")
    return [*lines, "", f"![accuracy against round]({_stem('fig3_accuracy')}.png)", ""]


def summarize_fig4(out: Path) -> list[str]:
    plt = _plot()
    from safetensors.torch import load_file

    runs = _runs(out, "fig4-")
    lines = ["## Seed Fig. 4: the orthogonal regulariser", "",
             f"SOFT at rho = {KEEP}, rank 8, with lambda_o in {list(FIG4_LAMBDAS)}.", "",
             "| lambda_o | seeds | final accuracy | last-3 accuracy | orth. error A | orth. error B |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    lams = sorted({x.config["compression"]["lambda_o"] for x in runs})
    fig, axes = plt.subplots(2, len(lams), figsize=(3.6 * len(lams), 6.6), squeeze=False)
    for col, lam in enumerate(lams):
        group = [x for x in runs if x.config["compression"]["lambda_o"] == lam]
        lines.append(
            f"| {lam:g} | {len(group)} | "
            f"{_fmt([final_value(g, 'test_accuracy') for g in group])} | "
            f"{_fmt([_tail_accuracy(g) for g in group])} | {_fmt([float(g.rounds['orth_error_a'].iloc[-1]) for g in group])} | "  # noqa: E501
            f"{_fmt([float(g.rounds['orth_error_b'].iloc[-1]) for g in group])} |"
        )
        first = min(group, key=lambda g: g.seed)
        tensors = load_file(str(first.path / "adapter" / "adapter_model.safetensors"))
        module = sorted(k for k in tensors if k.endswith("value.lora_A.weight"))[-1]
        a = tensors[module].double()
        b = tensors[module.replace("lora_A", "lora_B")].double()
        for row, (gram, name) in enumerate(((a @ a.t(), "A A^T"), (b.t() @ b, "B^T B"))):
            ax = axes[row][col]
            im = ax.imshow(gram.abs().numpy(), cmap="viridis")
            ax.set_title(f"|{name}|, lambda_o = {lam:g}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Gram matrices of the last layer's value module (seed 0)")
    fig.tight_layout()
    save_figure(fig, DOCS / f"{_stem('fig4_gram')}.png")
    return [*lines, "", f"![Gram matrices]({_stem('fig4_gram')}.png)", ""]


def summarize_fig56(out: Path) -> list[str]:
    plt = _plot()
    runs = _runs(out, "fig56-")
    lines = ["## Seed Figs. 5-6: covariance and accuracy against shards per client", "",
             "ILoRA (no compression), rank 8; more shards per client is closer to IID.", "",
             "| shards per client | seeds | mean covariance | final covariance | final accuracy "
             "| last-3 accuracy |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for n in sorted({x.config["data"]["shards_per_client"] for x in runs}):
        group = [x for x in runs if x.config["data"]["shards_per_client"] == n]
        for ax, col in zip(axes, ("covariance", "test_accuracy")):
            xs, mean, std = mean_curve(group, "round", col)
            (line,) = ax.plot(xs, mean, label=f"{n} shards/client")
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15, color=line.get_color())
        lines.append(
            f"| {n} | {len(group)} | {_fmt([float(g.rounds['covariance'].mean()) for g in group])} | "
            f"{_fmt([float(g.rounds['covariance'].iloc[-1]) for g in group])} | "
            f"{_fmt([final_value(g, 'test_accuracy') for g in group])} | {_fmt([_tail_accuracy(g) for g in group])} |"  # noqa: E501
        )
    for ax, name in zip(axes, ("covariance term", "test accuracy")):
        ax.set_xlabel("round")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, DOCS / f"{_stem('fig56_covariance_accuracy')}.png")
    return [*lines, "", f"![covariance and accuracy]({_stem('fig56_covariance_accuracy')}.png)", ""]


def summarize_fig3c(out: Path) -> list[str]:
    plt = _plot()
    runs = _runs(out, "fig3c-")
    lines = ["## Seed Fig. 3(c): TSFA against OSFA at fixed ranks, same delay budget", "",
             "SOFT, head frozen, D_bar = 0.2 s, V = 1; accuracy against the simulated clock.", "",
             "| scheme | rank | seeds | final accuracy | last-3 accuracy | mean keep ratio | mean upload delay (s) "  # noqa: E501
             "| simulated time (s) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4.4))
    groups: dict[str, list[Run]] = {}
    for x in runs:
        key = (
            "TSFA" if x.config["controller"]["kind"] == "tsfa" else f"OSFA r={x.config['model']['lora_rank']}"
        )
        groups.setdefault(key, []).append(x)
    for key in sorted(groups, key=lambda k: (k != "TSFA", int(k.split("=")[1]) if "=" in k else 0)):
        group = groups[key]
        xs, mean, std = mean_curve(group, "sim_time_s", "test_accuracy")
        (line,) = ax.plot(xs, mean, label=key, lw=2.5 if key == "TSFA" else 1.2)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.12, color=line.get_color())
        lines.append(
            f"| {key.split()[0]} | {group[0].config['model']['lora_rank']} | {len(group)} | "
            f"{_fmt([final_value(g, 'test_accuracy') for g in group])} | "
            f"{_fmt([_tail_accuracy(g) for g in group])} | {np.mean([g.rounds['keep_ratio'].mean() for g in group]):.3f} | "  # noqa: E501
            f"{np.mean([g.rounds['upload_delay_s'].mean() for g in group]):.3f} | "
            f"{np.mean([g.rounds['sim_time_s'].iloc[-1] for g in group]):.2f} |"
        )
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, DOCS / f"{_stem('fig3c_accuracy_vs_time')}.png")
    return [*lines, "", f"![accuracy against simulated time]({_stem('fig3c_accuracy_vs_time')}.png)", ""]


def summarize_vtradeoff(out: Path) -> list[str]:
    runs = [x for x in _runs(out, "vtradeoff-")] + [x for x in _runs(out, "fig3c-tsfa")]
    lines = ["## The V trade-off (training runs)", "",
             "TSFA, SOFT, head frozen, D_bar = 0.2 s (V = 1 is Fig. 3(c)'s TSFA).", "",
             "| V | seeds | mean upload delay (s) | mean bound | mean keep ratio | final accuracy | last-3 accuracy |",  # noqa: E501
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for v in sorted({x.config["controller"]["V"] for x in runs}):
        group = [x for x in runs if x.config["controller"]["V"] == v]
        lines.append(
            f"| {v:g} | {len(group)} | {np.mean([g.rounds['upload_delay_s'].mean() for g in group]):.4f} | "
            f"{np.mean([g.rounds['bound'].mean() for g in group]):.4f} | "
            f"{np.mean([g.rounds['keep_ratio'].mean() for g in group]):.3f} | "
            f"{_fmt([final_value(g, 'test_accuracy') for g in group])} | "
            f"{_fmt([_tail_accuracy(g) for g in group])} |"
        )
    return [*lines, ""]


def summarize_budget(out: Path) -> list[str]:
    """Controller only (no training): the delay budget over 10,000 rounds, per V."""
    from fedlora_ray.components import load_run_config
    from fedlora_ray.control.controller_only import simulate_uplink

    plt = _plot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    lines = ["## The delay budget over time (controller only, 10,000 rounds)", "",
             "TSFA with SOFT on MiniLM's LoRA shapes, D_bar = 0.2 s, no training (`fedlora-ray control`).", "",  # noqa: E501
             "| V | rank | mean upload delay (s) | last-1000 mean delay (s) | mean keep ratio | mean bound | final queue |",  # noqa: E501
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for v in (0.1, 1.0, 10.0, 100.0):
        cfg = load_run_config(BASE, ["controller.kind=tsfa", "compression.method=soft", f"controller.V={v}"])
        df = simulate_uplink(cfg, 10_000)
        running = df["upload_delay_s"].cumsum() / df["round"]
        axes[0].plot(df["round"], df["queue"], label=f"V = {v:g}")
        axes[1].plot(df["round"], running, label=f"V = {v:g}")
        lines.append(
            f"| {v:g} | {df['lora_rank'].iloc[0]} | {df['upload_delay_s'].mean():.4f} | "
            f"{df['upload_delay_s'].iloc[-1000:].mean():.4f} | {df['keep_ratio'].mean():.3f} | "
            f"{df['bound'].mean():.4f} | {df['queue'].iloc[-1]:.3f} |"
        )
    axes[1].axhline(cfg.controller.delay_budget_s, color="k", ls="--", lw=1, label="D_bar")
    for ax, name in zip(axes, ("virtual queue Q(t) (s)", "running average upload delay (s)")):
        ax.set_xlabel("round")
        ax.set_ylabel(name)
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, DOCS / "budget_over_time.png")
    return [*lines, "", "![queue and running average delay](budget_over_time.png)", ""]


def time_to_accuracy(run: Run, target: float) -> float:
    """Simulated time at the first evaluation reaching ``target`` (nan if never)."""
    hit = run.rounds[run.rounds["test_accuracy"] >= target]
    return float(hit["sim_time_s"].iloc[0]) if len(hit) else float("nan")


def summarize_wallclock(out: Path) -> list[str]:
    plt = _plot()
    runs = _runs(out, "wallclock-")
    by_scheme = {
        k: sorted([x for x in runs if x.path.name.startswith(f"wallclock-{k}-s")], key=lambda r: r.seed)
        for k in WALL_SCHEMES
    }
    lines = ["## Wall-clock time to a target accuracy (docs/algorithms.md §7)", "",
             "One heterogeneous system for every scheme (rank 16, head frozen, 60 rounds): compute speed "
             "lognormal (median 40 samples/s, sigma 1), transmit power lognormal (sigma 4 dB), distances "
             "50-500 m, 5 MHz uplink, bandwidth split so that each round's participants finish together. "
             "Time is the simulated clock (compute + upload of the slowest participant, summed over rounds).",
             "", "| scheme | seeds | " + " | ".join(f"time to {t:g} (s)" for t in WALL_TARGETS)
             + " | mean round (s) | mean participants | Mbit / participant | objective | last-3 accuracy |",
             "|---|---|" + "---|" * len(WALL_TARGETS) + "---|---|---|---|---|"]  # fmt: skip

    def cell(values: list[float]) -> str:
        got = [v for v in values if np.isfinite(v)]
        miss = len(values) - len(got)
        text = _fmt(got) if got else "not reached"
        return text + (f" ({miss} not reached)" if got and miss else "")

    for key, group in by_scheme.items():
        if not group:
            continue
        times = [cell([time_to_accuracy(g, t) for g in group]) for t in WALL_TARGETS]
        mbit = np.mean([g.rounds["uplink_bits"].sum() / g.rounds["sampled"].sum() for g in group]) / 1e6
        lines.append(
            f"| {WALL_LABEL[key]} | {len(group)} | " + " | ".join(times) + " | "
            f"{np.mean([g.rounds['round_delay_s'].mean() for g in group]):.2f} | "
            f"{np.mean([g.rounds['sampled'].mean() for g in group]):.1f} | "
            f"{mbit:.2f} | "
            f"{np.mean([g.rounds['objective'].iloc[0] for g in group]):.2f} | "
            f"{_fmt([_tail_accuracy(g) for g in group])} |"
        )
    lines += ["", f"Speed-up of the adaptive scheme to accuracy {WALL_PRIMARY:g}, per seed (baseline time / "
              "adaptive time, paired by seed), mean ± std:", "",
              "| against | speed-ups per seed | mean ± std |", "|---|---|---|"]  # fmt: skip
    ada = {g.seed: time_to_accuracy(g, WALL_PRIMARY) for g in by_scheme["adaptive"]}
    for key in [k for k in WALL_SCHEMES if k != "adaptive"]:
        ratios = [time_to_accuracy(g, WALL_PRIMARY) / ada[g.seed] for g in by_scheme[key] if g.seed in ada]
        shown = ", ".join("n/a" if not np.isfinite(r) else f"{r:.2f}" for r in ratios)
        finite = [r for r in ratios if np.isfinite(r)]
        lines.append(f"| {WALL_LABEL[key]} | {shown} | {_fmt(finite) if finite else 'n/a'} |")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for key, group in by_scheme.items():
        color = None
        for g in group:
            acc = g.rounds.dropna(subset=["test_accuracy"])
            (line,) = axes[0].plot(acc["sim_time_s"], acc["test_accuracy"], color=color, lw=1.1,
                                   label=WALL_LABEL[key] if color is None else None)  # fmt: skip
            color = line.get_color()
            axes[1].plot(acc["round"], acc["test_accuracy"], color=color, lw=1.1)
    axes[0].axhline(WALL_PRIMARY, color="k", ls="--", lw=0.8)
    axes[0].set_xlabel("simulated time (s)")
    for ax in axes:
        ax.axhline(0.1, color="k", ls="--", lw=0.8)  # chance on 10 classes
    axes[1].set_xlabel("round")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, DOCS / f"{_stem('wallclock_accuracy')}.png")
    return [
        *lines,
        "",
        f"![accuracy against simulated time and round]({_stem('wallclock_accuracy')}.png)",
        "",
    ]


# ---- issue 21: the paper's protocols (docs/algorithms.md §2-3)

E_METHODS = ["none", "soft", "flasc", "rlora", "hetlora", "fedlodrop"]
E2_KEEPS = (0.1, 0.25, 0.5)


def _named(out: Path, name: str) -> list[Run]:
    """The finished runs ``name``-s<seed> under ``out`` (none: an empty list)."""
    return [load_run(p) for p in sorted(out.glob(f"{name}-s*")) if (p / "summary.json").exists()]


def _short(run: Run) -> bool:
    """A run that logged fewer rounds than its config asks (stopped, diverged or unfinished)."""
    return int(run.rounds["round"].max()) < int(run.config["federation"]["rounds"])


def e_protocols(out: Path) -> dict[str, dict[str, list[Run]]]:
    """protocol -> method -> finished runs, from e0-e3 under ``out``. SOFT under error feedback
    for SOFT only is the same run as under error feedback for all, and ILoRA is the same in
    every protocol at keep 0.1 (it sends everything), so those rows reuse e0's runs."""
    e0 = {m: _named(out, f"e0-{m}") for m in E_METHODS}
    table: dict[str, dict[str, list[Run]]] = {
        "update, EF all, keep 0.1 (project default)": e0,
        "update, EF SOFT only, keep 0.1 (E1)": {
            "none": e0["none"], "soft": e0["soft"],
            **{m: _named(out, f"e1-{m}") for m in E_METHODS[2:]},
        },
    }  # fmt: skip
    for keep in E2_KEEPS:
        ef = {m: _named(out, f"e2-{m}-k{keep}-ef") for m in E_METHODS[1:]}
        noef = {m: _named(out, f"e2-{m}-k{keep}-noef") for m in E_METHODS[1:]}
        table[f"factors, EF all, keep {keep} (E2)"] = ef
        table[f"factors, EF SOFT only, keep {keep} (E2)"] = {
            "soft": ef["soft"],
            **{m: noef[m] for m in E_METHODS[2:]},
        }
        table[f"factors, no EF, keep {keep} (E2)"] = noef
    e3 = {m: _named(out, f"e3-{m}") for m in E_METHODS}
    if any(e3.values()):
        comp = next(r for runs in e3.values() for r in runs).config["compression"]
        scope = "SOFT only" if comp.get("error_feedback_scope") == "soft_only" else "all"
        ef = f"EF {scope}" if comp.get("error_feedback", True) else "no EF"
        table[f"{comp.get('target', 'update')}, {ef}, keep {comp['keep_ratio']}, batch 8, 1 epoch (E3)"] = e3
    return {k: {m: r for m, r in v.items() if r} for k, v in table.items() if any(v.values())}


def _order(cells: dict[str, list[float]], labels: dict[str, str] = LABEL, lower_first: bool = False) -> str:
    """Methods by mean (highest first, or lowest with ``lower_first``), '>' where the gap exceeds
    the larger standard deviation of the two, '≈' (a tie) where it does not."""
    ranked = sorted(cells, key=lambda m: np.mean(cells[m]) * (1 if lower_first else -1))
    text = f"{labels[ranked[0]]} {np.mean(cells[ranked[0]]):.3f}"
    for a, b in zip(ranked, ranked[1:]):
        gap = abs(np.mean(cells[a]) - np.mean(cells[b]))
        sign = ">" if gap > max(np.std(cells[a]), np.std(cells[b])) else "≈"
        text += f" {sign} {labels[b]} {np.mean(cells[b]):.3f}"
    return text


def summarize_e(out: Path) -> list[str]:
    """Issue 21's table: protocol x method -> last-3 accuracy (mean ± std over seeds) and the
    uplink per client and round; runs that ended before their horizon are marked."""
    table = e_protocols(out)
    if not table:
        raise SystemExit(f"no finished e0-e3 run under {out}: run their sweeps first")
    lines = ["## Issue 21: the paper's protocols", "",
             "Last-3 test accuracy (mean ± std over seeds) and uplink Mbit per client per round. EF: error "
             "feedback; 'factors': the sparsified factors are sent and averaged with an unsent entry as zero "
             "(docs/algorithms.md §2). A '*' marks a cell with a run that ended before its horizon.", "",
             "| protocol | " + " | ".join(LABEL[m] for m in E_METHODS) + " |",
             "|---|" + "---|" * len(E_METHODS)]  # fmt: skip
    orders = []
    for protocol, by_method in table.items():
        cells, acc = [], {}
        for m in E_METHODS:
            runs = by_method.get(m, [])
            if not runs:
                cells.append("")
                continue
            acc[m] = [_tail_accuracy(r) for r in runs]
            mbit = np.mean([r.rounds["uplink_bits"].mean() / r.rounds["sampled"].mean() / 1e6 for r in runs])
            star = "*" if any(_short(r) for r in runs) else ""
            cells.append(f"{_fmt(acc[m])}{star} (n={len(runs)}, {mbit:.3f} Mbit)")
        lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
        if acc:
            orders.append(f"- {protocol}: {_order(acc)}")
    return [*lines, "", "Order by mean last-3 accuracy ('≈': the gap is within one standard deviation):", "",
            *orders, ""]  # fmt: skip


def product_errors(adapter_now, adapter_before, method: str, keep: float, target: str, seed: int):  # type: ignore[no-untyped-def]
    """||BA - B^ A^|| / ||BA|| pooled over the modules, and with target=update also relative to
    the change of the product ||BA - B_p A_p||, when ``method`` sparsifies at ``keep`` [issue 21,
    E4; docs/algorithms.md §2]. Factor mode: B^, A^ = C(B, A), zero where unsent, scores from B, A
    (soft_score auto). Update mode: B^ = B_p + C(B - B_p) (and A^ likewise), B_p the adapter one
    checkpoint before, scores from the current factors (soft_score auto)."""
    import torch

    from fedlora_ray.compress import compressor
    from fedlora_ray.compress.base import dense_update
    from fedlora_ray.config import CompressionConfig

    cfg = CompressionConfig(method=method, keep_ratio=keep, target=target, allow_empty_upload=True)
    now = {m: (b.double(), a.double()) for m, (b, a) in adapter_now.lora.items()}
    before = {m: (b.double(), a.double()) for m, (b, a) in adapter_before.lora.items()}
    if target == "factors":
        u, base = (
            adapter_now.lora,
            {m: (torch.zeros_like(b), torch.zeros_like(a)) for m, (b, a) in now.items()},
        )
    else:
        u = {
            m: (b - adapter_before.lora[m][0], a - adapter_before.lora[m][1])
            for m, (b, a) in adapter_now.lora.items()
        }
        base = before
    sent = compressor(method).compress(u, adapter_now.lora, cfg, torch.Generator().manual_seed(seed))
    err = ref = change = 0.0
    for m, (b, a) in now.items():
        cb, ca = dense_update(sent.payload[m], b.shape, a.shape)
        bh, ah = base[m][0] + cb.double(), base[m][1] + ca.double()
        err += float((b @ a - bh @ ah).square().sum())
        ref += float((b @ a).square().sum())
        change += float((b @ a - before[m][0] @ before[m][1]).square().sum())
    return float(np.sqrt(err / ref)), (
        float(np.sqrt(err / change)) if target == "update" and change > 0 else None
    )


def summarize_e4(out: Path) -> list[str]:
    """E4: no training. On the final global adapters of e0's ILoRA runs (no orthogonal penalty)
    and SOFT runs (eq. (7)'s penalty), each method's relative product error at the same budget,
    in both modes; update mode takes the change since the checkpoint before the last."""
    from fedlora_ray.engine.checkpoint_state import load_state
    from fedlora_ray.rundir.checkpoint import checkpoints

    lines = ["## Issue 21, E4: product errors on saved global adapters (no training)", "",
             "||BA - B^A^|| / ||BA|| pooled over LoRA modules, mean ± std over seeds. 'factors': B^, A^ are "
             "the sparsified factors (zero where unsent). 'update': B^ = B_p + C(B - B_p) with B_p the "
             "checkpoint before the last (in brackets: the error relative to the product's change "
             "||BA - B_p A_p||). Scores as compression.soft_score=auto.", "",
             "| adapters of | mode | keep | " + " | ".join(LABEL[m] for m in E_METHODS[1:]) + " |",
             "|---|---|---|" + "---|" * (len(E_METHODS) - 1)]  # fmt: skip
    found = False
    for source in ("none", "soft"):
        pairs = []
        for run in _named(out, f"e0-{source}"):
            ckpts = checkpoints(run.path)
            if len(ckpts) >= 2:
                pairs.append(
                    (run.seed, load_state(ckpts[-1], None).adapter, load_state(ckpts[-2], None).adapter)
                )
        if not pairs:
            continue
        found = True
        for target in ("factors", "update"):
            for keep in E2_KEEPS:
                cells = []
                for method in E_METHODS[1:]:
                    got = [
                        product_errors(now, before, method, keep, target, seed) for seed, now, before in pairs
                    ]
                    text = _fmt([g[0] for g in got])
                    if target == "update":
                        text += f" [{_fmt([g[1] for g in got if g[1] is not None])}]"
                    cells.append(text)
                lines.append(
                    f"| {LABEL[source]} (n={len(pairs)}) | {target} | {keep} | " + " | ".join(cells) + " |"
                )
    if not found:
        raise SystemExit(f"no finished e0-none or e0-soft run with two checkpoints under {out}: run e0 first")
    return [*lines, ""]


# ---- issue 22: the privacy-utility curve (docs/algorithms.md §14)

PRIV_SCHEMES = ["ilora", "soft", "ffa", "fslora"]
PRIV_LABEL = {
    "ilora": "ILoRA (dense)",
    "soft": "SOFT, keep 0.1",
    "ffa": "FFA-LoRA (A frozen)",
    "fslora": "FSLoRA",
}


def _priv_key(run: Run) -> tuple[str, float, str]:
    """(scheme, target epsilon (inf: no privacy), sampling kind) of a privacy.yaml run."""
    c = run.config
    kind = c["algorithm"]["kind"]
    scheme = (
        kind if kind in ("ffa", "fslora") else ("soft" if c["compression"]["method"] == "soft" else "ilora")
    )
    eps = float("inf") if c["privacy"]["kind"] == "none" else float(c["privacy"]["target_epsilon"])
    return scheme, eps, str(c["sampling"]["kind"])


def _eps_text(eps: float) -> str:
    return "none" if not np.isfinite(eps) else f"{eps:g}"


def summarize_privacy(out: Path) -> list[str]:
    """Accuracy against the target epsilon (central DP, sigma solved for the run's rounds) per
    scheme, and independent against uniform sampling; mean ± std over seeds."""
    import json

    plt = _plot()
    runs = _runs(out, "privacy-")
    groups: dict[tuple[str, float, str], list[Run]] = {}
    for r in runs:
        groups.setdefault(_priv_key(r), []).append(r)
    cfg = runs[0].config
    fed, priv = cfg["federation"], cfg["privacy"]
    lines = ["## Issue 22: the privacy-utility curve (central DP)", "",
             f"{cfg['model']['name']}, {cfg['data']['dataset']}, {fed['rounds']} rounds, "
             f"{fed['clients_per_round']} of {fed['num_clients']} clients per round, clip C = "
             f"{priv['clip_norm']:g}, delta = {priv['delta']:g}, RDP accountant; sigma solved for the target "
             "epsilon over the whole run. Mean ± std over seeds of the final test accuracy and of the mean "
             "of the last three evaluations; 'clipped': the share of contributions scaled down to C. A '*' "
             "marks a cell with a run that ended before its horizon.", "",
             "| scheme | sampling | target epsilon | noise multiplier sigma | epsilon spent | seeds "
             "| final accuracy | last-3 accuracy | clipped |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def sigma(r: Run) -> float:
        return float(json.loads((r.path / "summary.json").read_text()).get("dp_noise_multiplier") or 0.0)

    order = sorted(groups, key=lambda k: (k[2] != "uniform", PRIV_SCHEMES.index(k[0]), -k[1]))
    for key in order:
        g = groups[key]
        scheme, eps, sampling = key
        private = np.isfinite(eps)
        spent = sig = clipped = "-"
        if private:
            spent = f"{np.mean([float(x.rounds['dp_epsilon'].iloc[-1]) for x in g]):.3f}"
            sig = f"{np.mean([sigma(x) for x in g]):.4g}"
            share = [x.rounds["dp_clipped"].sum() / max(1, x.rounds["sampled"].sum()) for x in g]
            clipped = f"{np.mean(share):.2f}"
        star = "*" if any(_short(x) for x in g) else ""
        final = _fmt([final_value(x, "test_accuracy") for x in g])
        tail = _fmt([_tail_accuracy(x) for x in g])
        lines.append(
            f"| {PRIV_LABEL[scheme]} | {sampling} | {_eps_text(eps)} | {sig} | {spent} | {len(g)} | "
            f"{final}{star} | {tail}{star} | {clipped} |"
        )
    # the matrix and the order at each epsilon (uniform sampling)
    epsilons = sorted({k[1] for k in groups if k[2] == "uniform"})
    lines += ["", "Last-3 accuracy, scheme x target epsilon (uniform sampling; n = seeds):", "",
              "| scheme | " + " | ".join(_eps_text(e) for e in epsilons) + " |",
              "|---|" + "---|" * len(epsilons)]  # fmt: skip
    for scheme in PRIV_SCHEMES:
        cells = []
        for e in epsilons:
            g = groups.get((scheme, e, "uniform"), [])
            cells.append(f"{_fmt([_tail_accuracy(x) for x in g])} (n={len(g)})" if g else "")
        lines.append(f"| {PRIV_LABEL[scheme]} | " + " | ".join(cells) + " |")
    lines += ["", "Order by mean last-3 accuracy at each epsilon ('≈': the gap is within the larger "
              "standard deviation of the two, a tie; '>': beyond it):", ""]  # fmt: skip
    for e in epsilons:
        cells = {s: [_tail_accuracy(x) for x in groups[(s, e, "uniform")]]
                 for s in PRIV_SCHEMES if (s, e, "uniform") in groups}  # fmt: skip
        ranked = sorted(cells, key=lambda m: -np.mean(cells[m]))
        text = f"{PRIV_LABEL[ranked[0]]} {np.mean(cells[ranked[0]]):.3f}"
        for a, b in zip(ranked, ranked[1:]):
            gap = np.mean(cells[a]) - np.mean(cells[b])
            sign = ">" if gap > max(np.std(cells[a]), np.std(cells[b])) else "≈"
            text += f" {sign} {PRIV_LABEL[b]} {np.mean(cells[b]):.3f}"
        lines.append(f"- epsilon {_eps_text(e)}: {text}")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    finite = [e for e in epsilons if np.isfinite(e)] or [1.0]
    x_none = 2 * max(finite)  # no privacy, drawn to the right of the largest epsilon

    def xpos(e: float) -> float:
        return e if np.isfinite(e) else x_none

    for scheme in PRIV_SCHEMES:
        for sampling, style in (("uniform", "-o"), ("independent", "--s")):
            keys = sorted(k for k in groups if k[0] == scheme and k[2] == sampling)
            if not keys:
                continue
            accs = [[_tail_accuracy(x) for x in groups[k]] for k in keys]
            label = PRIV_LABEL[scheme] + ("" if sampling == "uniform" else ", independent sampling")
            xs = [xpos(k[1]) for k in keys]
            axes[0].errorbar(xs, [np.mean(a) for a in accs], yerr=[np.std(a) for a in accs],
                             fmt=style, capsize=3, label=label)  # fmt: skip
    axes[0].set_xscale("log", base=2)
    ticks = [*finite, x_none]
    axes[0].set_xticks(ticks, [f"{t:g}" for t in finite] + ["none"])
    axes[0].set_xlabel("target epsilon (delta 1e-5, whole run)")
    axes[0].set_ylabel("last-3 test accuracy")
    axes[0].legend(fontsize=8)
    # the curves at the smallest epsilon that most schemes reached, beside no privacy
    smallest = min(finite, key=lambda e: (-sum((s, e, "uniform") in groups for s in PRIV_SCHEMES), e))
    for scheme in PRIV_SCHEMES:
        for e, style in ((smallest, "-"), (float("inf"), ":")):
            g = groups.get((scheme, e, "uniform"), [])
            if g:
                xs, mean, _ = mean_curve(g, "round", "test_accuracy")
                axes[1].plot(xs, mean, style, label=f"{PRIV_LABEL[scheme]}, epsilon {_eps_text(e)}")
    for ax in axes:
        ax.axhline(0.1, color="k", ls="--", lw=0.8)  # chance on 10 classes
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("test accuracy (mean over seeds)")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    png = f"privacy-{TAG}.png" if TAG else "privacy.png"
    save_figure(fig, DOCS / png)
    return [*lines, "", f"![accuracy against epsilon]({png})", ""]


LLM_METHODS = ["ilora", "soft", "flasc", "fslora", "hetlora", "adaptive", "uniform"]  # llm_methods.yaml
LLM_LABEL = {"ilora": "ILoRA (dense)", "soft": "SOFT", "flasc": "FLASC",
             "fslora": "FSLoRA, ratios {1/4, 1/2, 1}", "hetlora": "HetLoRA, ratios {1/4, 1/2, 1}",
             "adaptive": "FSLoRA + adaptive independent sampling",
             "uniform": "FSLoRA + uniform sampling"}  # fmt: skip


def base_model_scores(run: Run, out: Path) -> tuple[float, float]:
    """Perplexity and multiple-choice accuracy of the base model (the initial adapter, whose B is
    zero) on the run's own test split, evaluated here once per seed and kept under ``out``."""
    import json

    seed = run.config["federation"]["seed"]
    key = json.dumps([run.config["model"], run.config["data"], seed], sort_keys=True)
    cache = out / f"base-model-s{seed}.json"
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept["key"] == key:
            return kept["perplexity"], kept["accuracy"]
    import torch

    from fedlora_ray.components import load_run_config
    from fedlora_ray.engine.trainer import ClientTrainer

    torch.set_num_threads(1)
    cfg = load_run_config(base=run.config, overrides=["runtime.backend=serial"])
    trainer = ClientTrainer(cfg)
    result = trainer.evaluate(trainer.initial_adapter())
    ppl, acc = float(np.exp(result.loss_sum / result.loss_count)), result.correct / result.count
    write_bytes(cache, json.dumps({"key": key, "perplexity": ppl, "accuracy": acc}).encode())
    return ppl, acc


def summarize_llm(out: Path) -> list[str]:
    """Issue 20 item 5: the seeds' methods on the LLM default, per method the last evaluation's
    perplexity and multiple-choice accuracy (mean ± std over seeds) against the base model's, the
    uplink per client and round, and the simulated time of the whole run."""
    plt = _plot()
    groups = {m: _named(out, f"llm-{m}") for m in LLM_METHODS}
    groups = {m: g for m, g in groups.items() if g}
    if not groups:
        raise SystemExit(f"no finished llm-* run under {out}: run `python jobs/experiments.py llm` first")
    first = next(iter(groups.values()))
    base = [base_model_scores(r, out) for r in first]
    rounds = int(first[0].config["federation"]["rounds"])
    lines = ["## Issue 20: the seeds' methods on the LLM default", "",
             "SmolLM2-135M-Instruct + LoRA r = 8 (q_proj, v_proj) defining WordNet words, 100 clients, "
             f"10 per round, {rounds} rounds (jobs/configs/llm_quickstart.yaml, "
             "jobs/sweeps/llm_methods.yaml). Perplexity of the held-out glosses and 4-way multiple-choice "
             "accuracy (chance 0.25) at the last round, mean ± std over seeds; uplink Mbit per client per "
             "round; simulated time of the run. "
             "A '*' marks a cell with a run that ended before its horizon.", "",
             "| method | seeds | perplexity | MC accuracy | exact match | uplink Mbit / client / round | "
             "simulated time (s) |", "|---|---|---|---|---|---|---|",
             f"| base model (no fine-tuning) | {len(base)} | {_fmt([b[0] for b in base])} | "
             f"{_fmt([b[1] for b in base])} | | | |"]  # fmt: skip
    ppl: dict[str, list[float]] = {}
    acc: dict[str, list[float]] = {}
    sampling = [m for m in ("fslora", "uniform", "adaptive") if m in groups]
    fig, axes = plt.subplots(1, 3 if sampling else 2, figsize=(18 if sampling else 12, 4.2))
    for m, group in groups.items():
        ppl[m] = [final_value(r, "test_perplexity") for r in group]
        acc[m] = [final_value(r, "test_accuracy") for r in group]
        match = [final_value(r, "exact_match") for r in group]
        mbit = np.mean([r.rounds["uplink_bits"].mean() / r.rounds["sampled"].mean() / 1e6 for r in group])
        sim = [final_value(r, "sim_time_s") for r in group]
        star = "*" if any(_short(r) for r in group) else ""
        lines.append(
            f"| {LLM_LABEL[m]} | {len(group)} | {_fmt(ppl[m])}{star} | {_fmt(acc[m])}{star} | "
            f"{_fmt(match)} | {mbit:.3f} | {np.mean(sim):.0f} ± {np.std(sim):.0f} |"
        )
        xs, mean, std = mean_curve(group, "round", "test_perplexity")
        (line,) = axes[0].plot(xs, mean, marker="o", label=LLM_LABEL[m])
        axes[0].fill_between(xs, mean - std, mean + std, alpha=0.15, color=line.get_color())
        for r in group:  # what the uplink has carried so far: the communication side of the comparison
            r.rounds["uplink_gbit_sent"] = r.rounds["uplink_bits"].cumsum() / 1e9
        xs, mean, _ = mean_curve(group, "uplink_gbit_sent", "test_perplexity")
        axes[1].plot(xs, mean, marker="o", label=LLM_LABEL[m])
        if m in sampling:
            xs, mean, _ = mean_curve(group, "sim_time_s", "test_perplexity")
            axes[2].plot(xs, mean, marker="o", label=LLM_LABEL[m])
    axes[0].axhline(np.mean([b[0] for b in base]), color="k", ls="--", lw=0.8, label="base model")
    axes[1].set_xscale("log")
    for ax, xlabel in zip(axes, ("round", "uplink Gbit sent so far", "simulated time (s)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test perplexity (mean over seeds)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, DOCS / f"{_stem('llm_perplexity')}.png")

    return [*lines, "", "Order ('>': better by more than the larger standard deviation, '≈': a tie):", "",
            f"- perplexity (lower is better): {_order(ppl, LLM_LABEL, lower_first=True)}",
            f"- multiple-choice accuracy: {_order(acc, LLM_LABEL)}", "",
            f"![perplexity against round, uplink and time]({_stem('llm_perplexity')}.png)", ""]  # fmt: skip


SUMMARIES = {
    "fig3": summarize_fig3, "fig4": summarize_fig4, "fig56": summarize_fig56, "fig3c": summarize_fig3c,
    "vtradeoff": summarize_vtradeoff, "budget": summarize_budget, "wallclock": summarize_wallclock,
    "e": summarize_e, "e4": summarize_e4, "privacy": summarize_privacy, "llm": summarize_llm,
}  # fmt: skip


def summarize(fig: str, out: Path) -> Path:
    DOCS.mkdir(parents=True, exist_ok=True)
    lines = SUMMARIES[fig](out)
    path = DOCS / (f"{fig}-{TAG}.md" if TAG else f"{fig}.md")
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    print(path.read_text())
    return path


FIGURES = ["fig3", "fig3v", "fig4", "fig56", "fig3c", "vtradeoff", "wallclock", "e0", "e1", "e2", "e3"]
FIGURES += ["privacy"]  # issue 22
FIGURES += ["llm"]  # issue 20: jobs/sweeps/llm_methods.yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=[*FIGURES, "budget", "e4", "summarize"])
    ap.add_argument("fig", nargs="?", help=f"for summarize: one of {', '.join(SUMMARIES)}")
    ap.add_argument("--seeds", type=int, nargs="+", help="replace the spec's seeds (0 1 2)")
    ap.add_argument("--out", default="runs/exp")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--tag", default="", help="name of a variant (with its own --out and --set)")
    ap.add_argument("--base", help="the base config (default: the spec's, the text quickstart)")
    ap.add_argument("--parallel", type=int, default=0, help="runs at once (default: what the cluster holds)")
    ap.add_argument("--ranks", nargs="+", help="fig3, fig3v: only these of the spec's LoRA ranks (8, 16)")
    ap.add_argument("--keeps", nargs="+", type=float, help="e2: only these of the spec's keep ratios")
    ap.add_argument("--methods", nargs="+", choices=LLM_METHODS, help="llm: only these of the spec's methods")
    args = ap.parse_args()
    global TAG
    TAG = args.tag
    out = Path(args.out).resolve()
    if args.command == "summarize":
        if args.fig not in SUMMARIES:
            ap.error(f"summarize needs one of: {', '.join(SUMMARIES)}")
        summarize(args.fig, out)
        return
    if args.command in ("budget", "e4"):  # no training: budget simulates, e4 reads e0's checkpoints
        summarize(args.command, out)
        return
    from actors.sweep import SweepInterrupted, closing_table, run_sweep
    from fedlora_ray.sweep import load_spec

    name = {"llm": "llm_methods"}.get(args.command, args.command)
    spec = load_spec(SWEEPS / f"{name}.yaml", args.seeds, args.overrides, args.base)
    if args.ranks:
        known = {r.values.get("rank") for r in spec.runs}
        if not set(args.ranks) <= known:
            raise SystemExit(f"--ranks {args.ranks}: {args.command}.yaml has ranks {sorted(known - {None})}")
        kept = tuple(r for r in spec.runs if r.values.get("rank") in args.ranks)
        spec = dataclasses.replace(spec, runs=kept)
    if args.keeps:
        known_keeps = {r.values.get("compression.keep_ratio") for r in spec.runs}
        if not set(args.keeps) <= known_keeps:
            raise SystemExit(
                f"--keeps {args.keeps}: {args.command}.yaml has keep ratios {sorted(known_keeps - {None})}"
            )
        spec = dataclasses.replace(
            spec, runs=tuple(r for r in spec.runs if r.values.get("compression.keep_ratio") in args.keeps)
        )
    if args.methods:
        spec = dataclasses.replace(
            spec, runs=tuple(r for r in spec.runs if r.values.get("method") in args.methods)
        )
    if args.parallel:
        spec = dataclasses.replace(spec, max_concurrent=args.parallel)
    try:
        outcomes = run_sweep(spec, str(out), write=lambda line: print(line, flush=True))
    except SweepInterrupted as stop:
        print(f"interrupted; stopped {', '.join(stop.stopped) or 'nothing'}: the same command resumes them")
        raise SystemExit(130) from None
    print(closing_table(outcomes))
    summarize(
        {"fig3v": "fig3", "e0": "e", "e1": "e", "e2": "e", "e3": "e"}.get(args.command, args.command), out
    )


if __name__ == "__main__":
    main()
