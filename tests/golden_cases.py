"""A few representative 3-round runs, kept as golden Parquet files, and how they are compared.

Between them the cases cover every scheme (fedavg, fslora, hetlora, ffa), every compressor
(none, soft, flasc, rlora, hetlora, fedlodrop), every controller (equal, fixed, osfa, tsfa,
finish, adaptive) and both samplings; the many other combinations run the same code paths and
are checked for behaviour, not numbers, elsewhere.

A golden file is read on machines other than the one that wrote it, so the comparison is the
cross-machine kind (docs/algorithms.md §10, "Two kinds of equality"):
- integer, boolean and string columns (round, clients, steps, kept entries, bits, ranks,
  components, actor ids) are compared exactly: they are decisions and counts;
- float columns are compared within a stated tolerance, by the group they belong to
  (``FLOAT_TOLERANCE``); see that table for how each one was chosen.

``python -m tests.golden_cases [NAME ...]`` writes the files again (only after an intended
change of behaviour: say which in the commit). Timing columns are left out (wall clock).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GOLDEN = Path(__file__).resolve().parent / "golden"
TIMING_COLUMNS = {"round_seconds", "client_seconds", "elapsed_seconds", "train_seconds", "solve_seconds"}
BASE = [
    "federation.rounds=3", "model.lora_rank=8", "model.lora_alpha=16",
    "channel.compute_samples_per_s=40", "channel.compute_sigma=1.0",
]  # fmt: skip


def cases() -> dict[str, list[str]]:
    """name -> overrides on top of tests.conftest.tiny_config."""

    def case(kind: str, method: str, ctl: str, sampling: str) -> list[str]:
        out = [*BASE, f"algorithm.kind={kind}", f"controller.kind={ctl}", f"sampling.kind={sampling}"]
        if method != "none":
            out += [f"compression.method={method}", "compression.keep_ratio=0.1"]
        return out

    chosen = [
        ("fedavg", "none", "equal", "uniform"),
        ("fedavg", "soft", "tsfa", "independent"),
        ("fedavg", "soft", "osfa", "uniform"),
        ("fedavg", "flasc", "fixed", "independent"),
        ("fedavg", "rlora", "finish", "uniform"),
        ("fedavg", "hetlora", "equal", "independent"),
        ("fedavg", "fedlodrop", "tsfa", "uniform"),
        ("fslora", "none", "adaptive", "independent"),
        ("hetlora", "none", "fixed", "independent"),
        ("ffa", "none", "finish", "uniform"),
    ]
    return {"-".join(c): case(*c) for c in chosen}


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    why: str


# How each tolerance was chosen. The figures behind them come from benchmarks/portability.py:
# every case run under ATEN_CPU_CAPABILITY = default, avx2 and the machine's best, with 1 and 2
# torch threads, on an Intel AVX2 machine (which wrote the files) and an AMD AVX-512 one. The
# tolerances sit about two orders of magnitude above the largest difference seen, and far below
# what a real change does (a different random stream, step count or rule moves these columns by
# 1e-2 or more in three rounds).
TRAINING = Tolerance(
    rtol=1e-4,
    atol=1e-6,
    why="losses, covariance, distortion, orthogonality: fp32 training whose kernels sum in a "
    "CPU-dependent order; seen up to about 1e-6 relative after three rounds",
)
ACCURACY = Tolerance(
    rtol=0.0,
    atol=0.0,
    why="test accuracy counts argmax decisions; no near-tie flipped in any setting measured, so it "
    "stays exact (a flip would move it by one test example, 1/60 here)",
)
CLOCK = Tolerance(
    rtol=1e-9,
    atol=1e-12,
    why="channel gains, rates, delays, queue, bound, weights, probabilities: float64 numpy from "
    "seeded draws; only libm's last bits differ between CPUs (1e-15 relative seen), plus the "
    "adaptive solver's float64 iterations",
)

FLOAT_TOLERANCE: dict[str, Tolerance] = {
    **dict.fromkeys(
        ["train_loss", "test_loss", "covariance", "orth_error_a", "orth_error_b", "local_loss", "distortion"],
        TRAINING,
    ),
    "test_accuracy": ACCURACY,
}
# every other float column is CLOCK's


def tolerance(column: str) -> Tolerance:
    return FLOAT_TOLERANCE.get(column, CLOCK)


def differences(got: pd.DataFrame, want: pd.DataFrame) -> dict[str, float]:
    """Per float column: the largest |got - want| / (atol + rtol |want|) (1.0 is the tolerance's
    edge; inf where a zero tolerance is exceeded). Raises AssertionError, naming the column, when
    the shapes, the nulls or any exact column differ."""
    assert list(got.columns) == list(want.columns), (list(got.columns), list(want.columns))
    assert len(got) == len(want), f"{len(got)} rows, want {len(want)}"
    out: dict[str, float] = {}
    for col in want.columns:
        g, w = got[col], want[col]
        assert (g.isna() == w.isna()).all(), f"column {col!r}: nulls differ"
        if not pd.api.types.is_float_dtype(w):
            same = (g[w.notna()] == w[w.notna()]).all()
            assert same, f"column {col!r} differs: {g.tolist()} != {w.tolist()}"
            continue
        mask = w.notna().to_numpy()
        gv, wv = g.to_numpy(dtype=np.float64)[mask], w.to_numpy(dtype=np.float64)[mask]
        assert (np.isinf(gv) == np.isinf(wv)).all(), f"column {col!r}: infinities differ"
        finite = np.isfinite(wv)
        diff = np.abs(gv[finite] - wv[finite])
        tol = tolerance(col)
        bound = tol.atol + tol.rtol * np.abs(wv[finite])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(diff == 0, 0.0, diff / bound)
        out[col] = float(ratio.max(initial=0.0))
    return out


def relative_differences(got: pd.DataFrame, want: pd.DataFrame) -> dict[str, float]:
    """Per float column: the largest |got - want| / |want| (for the portability report)."""
    out = {}
    for col in want.columns:
        if pd.api.types.is_float_dtype(want[col]):
            g = got[col].to_numpy(dtype=np.float64)
            w = want[col].to_numpy(dtype=np.float64)
            # values at rounding-noise level (a covariance of 1e-16) have no relative difference
            ok = np.isfinite(w) & np.isfinite(g) & (np.abs(w) > 1e-9)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(g[ok] - w[ok]) / np.maximum(np.abs(w[ok]), 1e-300)
            out[col] = float(rel.max(initial=0.0))
    return out


def run_case(overrides: list[str], run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from fedlora_ray.engine.serial import run_serial
    from tests.conftest import tiny_config

    run_serial(tiny_config(*overrides), run_dir)
    frames = []
    for name in ("rounds", "clients"):
        df = pd.read_parquet(run_dir / f"{name}.parquet")
        frames.append(df[[c for c in df.columns if c not in TIMING_COLUMNS]])
    return frames[0], frames[1]


def golden(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_parquet(GOLDEN / f"{name}.{kind}.parquet") for kind in ("rounds", "clients"))  # type: ignore[return-value]


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
