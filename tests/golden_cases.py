"""Every valid scheme x compressor x controller x sampling combination, as tiny 3-round runs.

The golden Parquet files in tests/golden/ were written by ``python -m tests.golden_cases``
before the run became an explicit state; tests/test_golden.py reproduces them bit for bit on the
CPU. Timing columns are left out (they are wall-clock measurements)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

GOLDEN = Path(__file__).resolve().parent / "golden"
TIMING_COLUMNS = {"round_seconds", "client_seconds", "elapsed_seconds", "train_seconds", "solve_seconds"}
SPARSIFIERS = ("soft", "flasc", "rlora", "hetlora", "fedlodrop")
STRUCTURED = ("fslora", "hetlora", "ffa")
SAMPLINGS = ("uniform", "independent")


def cases() -> dict[str, list[str]]:
    """name -> overrides on top of tiny_config."""
    out: dict[str, list[str]] = {}
    base = ["federation.rounds=3", "model.lora_rank=8", "model.lora_alpha=16",
            "channel.compute_samples_per_s=40", "channel.compute_sigma=1.0"]  # fmt: skip
    for sampling in SAMPLINGS:
        for ctl in ("equal", "fixed", "finish"):
            out[f"fedavg-none-{ctl}-{sampling}"] = [
                *base,
                f"controller.kind={ctl}",
                f"sampling.kind={sampling}",
            ]
            for kind in STRUCTURED:
                out[f"{kind}-none-{ctl}-{sampling}"] = [
                    *base, f"algorithm.kind={kind}", f"controller.kind={ctl}", f"sampling.kind={sampling}"
                ]  # fmt: skip
        for method in SPARSIFIERS:
            for ctl in ("equal", "fixed", "osfa", "tsfa", "finish"):
                out[f"fedavg-{method}-{ctl}-{sampling}"] = [
                    *base, f"compression.method={method}", "compression.keep_ratio=0.1",
                    f"controller.kind={ctl}", f"sampling.kind={sampling}",
                ]  # fmt: skip
    out["fslora-none-adaptive-independent"] = [
        *base, "algorithm.kind=fslora", "controller.kind=adaptive", "sampling.kind=independent"
    ]  # fmt: skip
    return out


def run_case(overrides: list[str], run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from fedlora_ray.simulate import run_serial
    from tests.conftest import tiny_config

    run_serial(tiny_config(*overrides), run_dir)
    frames = []
    for name in ("rounds", "clients"):
        df = pd.read_parquet(run_dir / f"{name}.parquet")
        frames.append(df[[c for c in df.columns if c not in TIMING_COLUMNS]])
    return frames[0], frames[1]


def main() -> int:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    chosen = sys.argv[1:] or list(cases())
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            rounds, clients = run_case(cases()[name], Path(tmp) / name)
            rounds.to_parquet(GOLDEN / f"{name}.rounds.parquet", index=False)
            clients.to_parquet(GOLDEN / f"{name}.clients.parquet", index=False)
            print(name, len(rounds), len(clients), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
