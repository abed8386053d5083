"""Controller-only mode (`fedlora-ray control`) on the quickstart: 10,000 rounds, three schemes.

For each scheme: the whole command as a user runs it (a fresh process: imports, config, TSFA's
offline stage, the LoRA shapes, the WordNet partition, the head's size, the rounds, the Parquet
file), wall and CPU seconds; then, in this process, the rounds alone. CPU seconds are the figure
to compare on a shared machine (the load average is recorded with them). Writes
benchmarks/results/control_mode.{json,md}.

    python benchmarks/control_mode.py [--rounds 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedlora_ray.components import load_run_config  # noqa: E402
from fedlora_ray.control.controller_only import client_data, simulate_control, trained_head_entries  # noqa: E402
from fedlora_ray.tasks import lora_module_dims  # noqa: E402

CONFIG = ROOT / "jobs/configs/quickstart.yaml"
HETEROGENEOUS = ["channel.compute_samples_per_s=40", "channel.compute_sigma=1", "channel.tx_power_sigma_db=4"]
SCHEMES = {
    "fedavg + soft + tsfa (V = 10)": ["compression.method=soft", "controller.kind=tsfa", "controller.V=10"],
    "fslora + adaptive, independent": [
        "model.train_head=false", "algorithm.kind=fslora", "sampling.kind=independent",
        "controller.kind=adaptive", *HETEROGENEOUS,
    ],
    "hetlora + finish": ["algorithm.kind=hetlora", "controller.kind=finish", *HETEROGENEOUS],
}  # fmt: skip


def cli_seconds(overrides: list[str], rounds: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `fedlora-ray control` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        sets = [arg for o in overrides for arg in ("--set", o)]
        cli = str(Path(sys.executable).parent / "fedlora-ray")
        cmd = [cli, "control", str(CONFIG), "--rounds", str(rounds), "--out", f"{tmp}/c.parquet", *sets]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10_000)
    args = ap.parse_args()
    rows = []
    for name, overrides in SCHEMES.items():
        load = os.getloadavg()[0]
        wall, cpu = cli_seconds(overrides, args.rounds)
        cfg = load_run_config(str(CONFIG), overrides)
        sizes, labels = client_data(cfg)
        dims, head = lora_module_dims(cfg.model), trained_head_entries(cfg, labels)
        start, cpu_start = time.perf_counter(), time.process_time()
        log = simulate_control(cfg, args.rounds, dims, sizes, head)
        loop_wall, loop_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        r = log.rounds
        rows.append({
            "scheme": name, "rounds": args.rounds, "load_average": load,
            "command_wall_s": wall, "command_cpu_s": cpu, "rounds_wall_s": loop_wall,
            "rounds_cpu_s": loop_cpu, "rank": int(r["lora_rank"].iloc[0]),
            "mean_participants": float(r["sampled"].mean()),
            "mean_upload_delay_s": float(r["upload_delay_s"].mean()),
            "mean_round_delay_s": float(r["round_delay_s"].mean()),
            "mean_uplink_mbit": float(r["uplink_bits"].mean() / 1e6),
            "sim_time_s": float(r["sim_time_s"].iloc[-1]),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "benchmarks/results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    (out / "control_mode.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"# Controller-only mode, quickstart, {args.rounds:,} rounds", "",
        f"{meta['machine']}, {meta['cpus']} CPUs. Command: `fedlora-ray control jobs/configs/quickstart.yaml "
        f"--rounds {args.rounds}` plus the scheme's `--set`s (see benchmarks/control_mode.py).", "",
        "| scheme | load avg | command wall / CPU (s) | rounds wall / CPU (s) | rank | mean participants "
        "| mean upload delay (s) | mean round delay (s) | mean uplink (Mbit/round) |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['scheme']} | {r['load_average']:.1f} | {r['command_wall_s']:.1f} / "
          f"{r['command_cpu_s']:.1f} | {r['rounds_wall_s']:.1f} / {r['rounds_cpu_s']:.1f} | {r['rank']} | "
          f"{r['mean_participants']:.2f} | {r['mean_upload_delay_s']:.4f} | "
          f"{r['mean_round_delay_s']:.4f} | {r['mean_uplink_mbit']:.2f} |" for r in rows],
        "",
    ]  # fmt: skip
    (out / "control_mode.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
