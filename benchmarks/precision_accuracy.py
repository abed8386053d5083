"""How far bfloat16 moves a trained model's test accuracy: each finished run's global adapter,
evaluated on its test split in fp32 and under bf16 autocast (`runtime.precision`), on this
machine's device. Prints the two accuracies and losses per run and writes them to
benchmarks/results/precision_accuracy.{json,md}.

    python benchmarks/precision_accuracy.py RUN_DIR [RUN_DIR ...] [--out benchmarks/results]

This isolates the arithmetic of the forward pass. The effect on a whole training run (bf16 in
every local step too) is `fedlora-ray run CONFIG --set runtime.precision=bf16` against the same
run in fp32; on a CPU without native bfloat16 that is many times slower than fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetensors.torch import load_file  # noqa: E402

from fedlora_ray.components import load_run_config  # noqa: E402
from fedlora_ray.config import replace  # noqa: E402
from fedlora_ray.engine.trainer import ClientTrainer  # noqa: E402
from fedlora_ray.lora.adapter import Adapter  # noqa: E402


def saved_adapter(run_dir: Path, initial: Adapter) -> Adapter:
    """The run's saved global adapter as an ``Adapter`` (the seeded head where it was frozen)."""
    state = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    lora = {}
    for m in initial.lora:
        key = f"base_model.model.{m}"
        lora[m] = (state[f"{key}.lora_B.weight"].flatten(1), state[f"{key}.lora_A.weight"].flatten(1))
    head_file = run_dir / "adapter" / "classifier.safetensors"
    head = load_file(str(head_file)) if head_file.is_file() else initial.head
    return Adapter(lora, head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows: list[dict[str, Any]] = []
    for run in map(Path, args.runs):
        cfg = load_run_config(None, base=json.loads((run / "config.json").read_text()))
        row: dict[str, Any] = {"run": str(run), "model": cfg.model.name, "dataset": cfg.data.dataset}
        trainer = ClientTrainer(replace(cfg, "runtime.precision=fp32"), device)
        adapter = saved_adapter(run, trainer.initial_adapter())
        for precision in ("fp32", "bf16"):
            trainer.cfg = replace(cfg, f"runtime.precision={precision}")
            start = time.perf_counter()
            result = trainer.evaluate(adapter)
            row[precision] = {
                "accuracy": result.accuracy,
                "loss": result.loss,
                "seconds": time.perf_counter() - start,
            }
        row["accuracy_change"] = row["bf16"]["accuracy"] - row["fp32"]["accuracy"]
        rows.append(row)
        print(
            f"{run}: accuracy fp32 {row['fp32']['accuracy']:.4f}, bf16 {row['bf16']['accuracy']:.4f} "
            f"({row['accuracy_change']:+.4f}); loss {row['fp32']['loss']:.4f} / {row['bf16']['loss']:.4f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision_accuracy.json").write_text(
        json.dumps({"device": device, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"# Test accuracy of finished runs evaluated in fp32 and bf16 ({device})", "",
        "`python benchmarks/precision_accuracy.py " + " ".join(args.runs) + "`", "",
        "| run | model | dataset | accuracy fp32 | accuracy bf16 | change | loss fp32 | loss bf16 |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {Path(r['run']).name} | {r['model']} | {r['dataset']} | {r['fp32']['accuracy']:.4f} | "
            f"{r['bf16']['accuracy']:.4f} | {r['accuracy_change']:+.4f} | {r['fp32']['loss']:.4f} | "
            f"{r['bf16']['loss']:.4f} |"
        )
    (out / "precision_accuracy.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
