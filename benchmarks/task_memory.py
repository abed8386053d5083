"""Resident memory of the driver and of one client actor, for each built-in task.

Each measurement runs in a fresh process (so one task's memory never counts against another):
  - driver: import what the driver imports, then do what it does with the data: load the
    training split's labels and partition them (`load_splits`, `partition_indices`);
  - actor:  build a `ClientTrainer` (data prepared once, the base model with LoRA) and train
    one client;
and reports the peak resident set size (ru_maxrss) and what the data added to it. The tasks:

  text:   WordNet + MiniLM (jobs/configs/quickstart.yaml);
  vision: Fashion-MNIST + EfficientNet-Lite0 (jobs/configs/vision_quickstart.yaml);
  paper:  CIFAR-100 + ViT-B/16 and AG News + DistilBERT (jobs/configs/paper/), both with
          random weights (no internet here) on full-size files in the real formats, written
          to a temporary folder with random contents (50,000 + 10,000 images; 120,000 + 7,600
          articles).

    python benchmarks/task_memory.py [--only NAME ...]

Printed, and written to benchmarks/results/task_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = ROOT / "benchmarks" / "results"
MB = 1024 * 1024


def _tasks(data: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (config file, overrides)."""
    random_weights = ["model.weights=", "model.allow_random_init=true"]
    return {
        "wordnet_minilm": ("jobs/configs/quickstart.yaml", []),
        "fashion_mnist_efficientnet_lite0": (
            "jobs/configs/vision_quickstart.yaml",
            ["model.feature_cache_dir="],  # computed in the actor, as on a first run
        ),
        "cifar100_vit_b16": (
            "jobs/configs/paper/soft_cifar100_vitb16.yaml",
            [*random_weights, f"data.root={data / 'cifar'}"],
        ),
        "ag_news_distilbert": (
            "jobs/configs/paper/soft_agnews_distilbert.yaml",
            [*random_weights, f"data.root={data / 'ag_news'}"],
        ),
    }


def write_fake_data(data: Path) -> None:
    """Full-size CIFAR-100 and AG News in their real formats, with random contents."""
    import numpy as np

    rng = np.random.default_rng(0)
    cifar = data / "cifar" / "cifar-100-python"
    cifar.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 50_000), ("test", 10_000)):
        fine = np.tile(np.arange(100), n // 100)
        blob = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine.tolist(),
                b"coarse_labels": (fine // 5).tolist()}  # fmt: skip
        (cifar / split).write_bytes(pickle.dumps(blob))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"g{i}".encode() for i in range(20)]}  # fmt: skip
    (cifar / "meta").write_bytes(pickle.dumps(meta))
    news = data / "ag_news"
    news.mkdir(parents=True, exist_ok=True)
    words = np.array(["the", "market", "team", "game", "price", "world", "vote", "sport", "tech", "oil"])
    for split, n in (("train", 120_000), ("test", 7_600)):
        lines = []
        for i in range(n):
            title = " ".join(rng.choice(words, 6))
            body = " ".join(rng.choice(words, 30))
            lines.append(f'"{i % 4 + 1}","{title}","{body}"')
        (news / f"{split}.csv").write_text("\n".join(lines) + "\n")


def _status(field: str) -> float:
    """VmRSS (resident now) or VmHWM (the peak so far) of this process, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(role: str, config: str, overrides: list[str]) -> dict[str, float]:
    """Run in a child process: resident memory after importing, and after the role's work."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from fedlora_ray.algorithm.messages import ClientTask
    from fedlora_ray.components import load_run_config
    from fedlora_ray.data import partition_indices
    from fedlora_ray.engine.trainer import ClientTrainer
    from fedlora_ray.tasks import load_splits, model_family

    cfg = load_run_config(ROOT / config, [*overrides, "runtime.backend=serial"])
    model_family(cfg.model.name)  # the family's imports (timm, transformers) count as baseline
    gc.collect()
    out = {"baseline_mb": _status("VmRSS")}
    train, _ = load_splits(cfg.data)
    parts = partition_indices(train.labels, cfg.federation.num_clients, cfg.data, cfg.federation.seed)
    out["examples"] = float(len(train))
    if role == "driver":
        gc.collect()
        return {**out, "holds_mb": _status("VmRSS"), "peak_mb": _status("VmHWM")}
    trainer = ClientTrainer(cfg)
    gc.collect()
    out["prepared_mb"] = _status("VmRSS")  # data prepared once, model built
    task = ClientTask(client_id=0, round=1, seed=1, indices=np.asarray(parts[0])[:16])
    trainer.train(trainer.initial_adapter(), [task])
    gc.collect()
    return {**out, "holds_mb": _status("VmRSS"), "peak_mb": _status("VmHWM")}


def _child(role: str, config: str, overrides: list[str]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", role, config, *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{role} on {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        role, config, *overrides = args.child
        print(json.dumps(measure(role, config, overrides)))
        return
    with tempfile.TemporaryDirectory(prefix="fr-mem-") as tmp:
        data = Path(tmp)
        write_fake_data(data)
        results = {}
        for name, (config, overrides) in _tasks(data).items():
            if args.only and name not in args.only:
                continue
            results[name] = {"config": config, "overrides": overrides,
                             "driver": _child("driver", config, overrides),
                             "actor": _child("actor", config, overrides)}  # fmt: skip
            d, a = results[name]["driver"], results[name]["actor"]
            print(f"{name}: driver holds {d['holds_mb']:.0f} MB (baseline {d['baseline_mb']:.0f}), "
                  f"actor holds {a['holds_mb']:.0f} MB (peak {a['peak_mb']:.0f})", flush=True)  # fmt: skip
    lines = ["# Resident memory per task (MB)", "",
             f"{platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}; "
             "`python benchmarks/task_memory.py`. Each role runs in a fresh process. Baseline: "
             "resident after importing the task's libraries. The driver then loads the training "
             "labels and partitions them; the actor builds its client trainer (data prepared "
             "once, the base model with LoRA) and trains one client on 16 examples. 'Holds' is "
             "the resident set after the work, 'peak' the most it ever held.", "",
             "| task | training examples | baseline | driver holds | driver peak | actor after prepare + "
             "build | actor holds after a client | actor peak |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        d, a = r["driver"], r["actor"]
        cells = [d["baseline_mb"], d["holds_mb"], d["peak_mb"], a["prepared_mb"], a["holds_mb"], a["peak_mb"]]
        lines.append(f"| {name} | {int(d['examples']):,} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "task_memory.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "task_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
