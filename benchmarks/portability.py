"""How far the golden runs and the many-clients-per-pass equivalence move with the CPU's kernels.

Golden files are written on one machine and read on others (Intel or AMD, AVX2 or AVX-512,
1 or 2 threads). This script stands in for those machines on one: it runs every golden case
(tests/golden_cases.py) and every scheme of the batched-pass equivalence (tests/test_batched.py)
under ``ATEN_CPU_CAPABILITY`` = default, avx2 and the machine's best, each with 1 and 2 torch
threads, one fresh interpreter per setting, and reports the largest difference seen against
each tolerance (1.0 = the tolerance's edge). Exact columns (counts, decisions) must match.

    python benchmarks/portability.py         # every setting; writes benchmarks/results/portability.*
    python benchmarks/portability.py --one   # this interpreter's setting only, as JSON (one child)

tests/test_portability.py runs the same matrix in the suite and fails past a tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CAPABILITIES = ("default", "avx2", "best")
THREADS = (1, 2)


def measure_here(threads: int) -> dict:
    """Run every golden case and every batched scheme in this interpreter; the differences."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tests import golden_cases as g
    from tests.conftest import tiny_config
    from tests.test_batched import RTOL, SCHEMES, STATE_RTOL, compare_passes

    torch.set_num_threads(threads)
    golden: dict[str, dict[str, float]] = {}  # column -> worst fraction of its tolerance
    relative: dict[str, float] = {}  # column -> worst relative difference
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in g.cases().items():
            got = g.run_case([*overrides, f"runtime.torch_threads={threads}"], Path(tmp) / name)
            for frame, want in zip(got, g.golden(name), strict=True):
                for col, ratio in g.differences(frame[list(want.columns)], want).items():
                    if ratio >= golden.get(col, {}).get("of_tolerance", -1.0):
                        golden[col] = {"of_tolerance": ratio, "case": name}  # type: ignore[dict-item]
                for col, rel in g.relative_differences(frame[list(want.columns)], want).items():
                    relative[col] = max(relative.get(col, 0.0), rel)
    batched: dict[str, dict[str, float]] = {}
    for scheme, overrides in SCHEMES.items():
        torch.set_num_threads(threads)
        worst = compare_passes(tiny_config(*overrides), rounds=2 if "soft" in scheme else 1)
        batched[scheme] = {
            "loss_of_tolerance": worst["loss"] / RTOL,
            "upload_of_tolerance": worst["upload"] / RTOL,
            "state_of_tolerance": worst["state"] / STATE_RTOL,
            **worst,
        }
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads,
        "golden": golden,
        "golden_relative": relative,
        "batched": batched,
    }


def child_env(capability: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "best":
        env["ATEN_CPU_CAPABILITY"] = capability
    return env


def measure(capability: str, threads: int) -> dict:
    """``measure_here`` in a fresh interpreter (the capability is read once, at torch's import)."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", "--threads", str(threads)],
        env=child_env(capability), cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        tail = f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        raise RuntimeError(f"{capability}/{threads} threads failed:\n{tail}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["asked"] = capability
    return result


def worst_of(result: dict) -> tuple[float, str]:
    """The largest fraction of a tolerance in one setting's result, and where."""
    items = [(v["of_tolerance"], f"golden {col} ({v['case']})") for col, v in result["golden"].items()]
    for scheme, v in result["batched"].items():
        items += [(v[f"{k}_of_tolerance"], f"batched {scheme} {k}") for k in ("loss", "upload", "state")]
    return max(items)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", action="store_true", help="measure this interpreter's setting, print JSON")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_here(args.threads)))
        return 0
    started = time.perf_counter()
    results = [measure(c, t) for c in CAPABILITIES for t in THREADS]
    lines = [
        "| ATEN_CPU_CAPABILITY | threads | worst fraction of a tolerance | where |",
        "|---|---|---|---|",
    ]
    for r in results:
        frac, where = worst_of(r)
        lines.append(f"| {r['asked']} ({r['capability']}) | {r['threads']} | {frac:.3g} | {where} |")
    cols = sorted({c for r in results for c in r["golden_relative"]})
    lines += ["", "Largest relative difference against the golden files, over all settings:", ""]
    lines += [f"- {c}: {max(r['golden_relative'].get(c, 0.0) for r in results):.3g}" for c in cols]
    for k in ("loss", "upload", "state"):
        seen = max(v[k] for r in results for v in r["batched"].values())
        lines.append(f"- batched pass vs one-client loop, {k}: {seen:.3g}")
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    header = f"CPU: {cpu}; {len(results)} settings in {time.perf_counter() - started:.0f} s"
    text = "\n".join([header, "", *lines])
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "portability.json").write_text(json.dumps({"cpu": cpu, "results": results}, indent=1) + "\n")
    (out / "portability.md").write_text(f"# Portability of the golden and equivalence tests\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
