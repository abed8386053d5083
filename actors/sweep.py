"""Run a sweep (``fedlora_ray.sweep``) on a Ray cluster: many runs at once, each with its resources.

A run on the Ray backend gets its own DriverActor and client-actor pool, as `fedlora-ray run`
would: its task holds no resources and stays on this node (so a local --out lands here), and the
sweep starts no more runs at once than the cluster holds pools. A run on the serial backend is
packed: the whole run is one Ray task holding the spec's ``task`` resources (a fractional GPU
for a small model), placed anywhere in the cluster. Finished runs are skipped, started ones
resume from their newest checkpoint, and a failed run does not stop the others. Ctrl-C stops
every running run at once (what they wrote is whole: every file is written atomically) and says
how to resume them.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.rundir.run_log import has_logs, read_rounds
from fedlora_ray.storage import is_uri, join, remove_folder, write_file
from fedlora_ray.sweep import RUNS_FILE, SweepRun, SweepSpec, check_sweep_root, run_status, runs_table

_POLL_S = 0.5  # a blocking ray.wait holds off Ctrl-C until a run ends; waiting in slices does not
PROGRESS_S = 60.0  # runs print no progress of their own in a sweep: where each one is, this often


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: the runs that were running, now stopped."""

    def __init__(self, stopped: list[str]) -> None:
        super().__init__(stopped)
        self.stopped = stopped


@dataclass
class RunOutcome:
    run_id: str
    status: str  # done (now), skipped (done before), failed
    seconds: float = 0.0
    final_test_accuracy: float | None = None
    error: str = ""


@ray.remote(max_retries=0)
def _execute(cfg: RunConfig, run_dir: str, status: str) -> dict[str, Any]:
    """One run, inside its Ray task: fresh, restarted (partial logs without a checkpoint are
    discarded) or resumed from its newest checkpoint."""
    from actors.cli import resume_command, run_command

    if status == "restart":
        remove_folder(run_dir)
    if status == "resume":
        return resume_command(run_dir, [f"federation.rounds={cfg.federation.rounds}"])
    return run_command(cfg, run_dir)


def _error_text(err: BaseException) -> str:
    """The last line of the run's own error (a RayTaskError wraps it in the task's traceback)."""
    cause = getattr(err, "cause", None) or err
    text = "".join(traceback.format_exception_only(type(cause), cause)).strip().splitlines()
    return text[-1] if text else repr(err)


def _needs(cfg: RunConfig, spec: SweepSpec) -> dict[str, float]:
    """What one run holds while it runs: a pool of client actors, or one packed task."""
    rt = cfg.runtime
    if rt.backend == "serial":
        return {"CPU": spec.task_cpus, "GPU": spec.task_gpus}
    if not isinstance(rt.num_actors, int):
        raise ConfigError(
            "config field 'runtime.num_actors' = 'auto' in a sweep: every run would size its pool to the "
            "whole cluster; give each run a number of actors, or set the spec's max_concurrent: 1"
        )
    return {"CPU": rt.num_actors * rt.num_cpus_per_actor, "GPU": rt.num_actors * rt.num_gpus_per_actor}


def concurrent_runs(needs: dict[str, float], cluster: dict[str, float], cap: int) -> int:
    """How many runs of ``needs`` the cluster's totals hold at once (at least 1), capped by the
    spec's max_concurrent when it is set."""
    fits = min(
        (math.floor(cluster.get(k, 0.0) / v + 1e-6) for k, v in needs.items() if v > 0), default=cap or 64
    )
    count = max(1, fits)
    return min(count, cap) if cap > 0 else count


def _runs_parquet(spec: SweepSpec) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(runs_table(spec), sink)
    return bytes(sink.getvalue().to_pybytes())


def run_sweep(spec: SweepSpec, root: str, write: Callable[[str], None] = print) -> list[RunOutcome]:
    """Every run of the spec in ``root``/run_id (a folder or URI); one outcome per run, in
    spec order. runs.parquet and sweep.json are written first."""
    from actors.launch import connect

    check_sweep_root(root)  # before anything is written there
    configs = {run.run_id: spec.config(run) for run in spec.runs}
    statuses = {rid: run_status(join(root, rid), cfg) for rid, cfg in configs.items()}
    needs = {rid: _needs(cfg, spec) for rid, cfg in configs.items()}
    write_file(root, RUNS_FILE, _runs_parquet(spec))
    about = {"name": spec.name, "base": str(spec.base), "runs": [r.run_id for r in spec.runs]}
    write_file(root, "sweep.json", json.dumps(about, indent=1).encode())
    started = connect(next(iter(configs.values())))
    try:
        return _drive(spec, root, configs, statuses, needs, write)
    finally:
        if started:
            ray.shutdown()


def _drive(
    spec: SweepSpec,
    root: str,
    configs: dict[str, RunConfig],
    statuses: dict[str, str],
    needs: dict[str, dict[str, float]],
    write: Callable[[str], None],
) -> list[RunOutcome]:
    cluster = ray.cluster_resources()
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    outcomes = {rid: RunOutcome(rid, "skipped") for rid, s in statuses.items() if s == "done"}
    waiting: list[SweepRun] = [r for r in spec.runs if statuses[r.run_id] != "done"]
    largest = max(needs.values(), key=lambda n: sum(n.values()))
    limit = min(concurrent_runs(largest, cluster, spec.max_concurrent), max(1, len(waiting)))
    running: dict[Any, tuple[str, float]] = {}
    start = time.perf_counter()

    def line() -> None:
        done = sum(o.status == "done" for o in outcomes.values())
        failed = sum(o.status == "failed" for o in outcomes.values())
        skipped = sum(o.status == "skipped" for o in outcomes.values())
        write(
            f"sweep {spec.name}: {done + skipped}/{len(spec.runs)} done ({skipped} before), "
            f"{len(running)} running, {failed} failed, {len(waiting)} waiting | "
            f"{time.perf_counter() - start:.0f} s"
        )

    def report() -> None:  # while runs are going: the line, then where each running run is
        line()
        for rid, began in running.values():
            write(_where(join(root, rid), configs[rid].federation.rounds, began, rid))

    write(f"sweep {spec.name}: {len(spec.runs)} runs under {root}, at most {limit} at once")
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                run = waiting.pop(0)
                cfg, status = configs[run.run_id], statuses[run.run_id]
                if cfg.runtime.backend == "serial":
                    options: dict[str, Any] = {"num_cpus": spec.task_cpus, "num_gpus": spec.task_gpus}
                else:  # its driver and pool reserve their own resources; the run's folder is here
                    options = {"num_cpus": 0, "scheduling_strategy": here}
                ref = _execute.options(**options).remote(cfg, join(root, run.run_id), status)
                running[ref] = (run.run_id, time.perf_counter())
            line()  # after the free places are filled: what runs now
            ready = _wait_one(running, report)
            for ref in ready:
                rid, began = running.pop(ref)
                try:
                    summary = ray.get(ref)
                    outcomes[rid] = RunOutcome(
                        rid, "done", time.perf_counter() - began, summary.get("final_test_accuracy")
                    )
                except Exception as err:  # one failed run does not stop the others
                    outcomes[rid] = RunOutcome(
                        rid, "failed", time.perf_counter() - began, error=_error_text(err)
                    )
    except KeyboardInterrupt:
        for ref in running:  # kills the task's process: a Ray-backend run's driver and pool end with it
            ray.cancel(ref, force=True)
        raise SweepInterrupted([rid for rid, _ in running.values()]) from None
    line()
    return [outcomes[r.run_id] for r in spec.runs]


def _wait_one(running: dict[Any, tuple[str, float]], report: Callable[[], object]) -> list[Any]:
    """The runs that ended, at least one, waited for in slices so that Ctrl-C gets through;
    ``report`` is called every PROGRESS_S seconds of waiting."""
    ready: list[Any] = []
    last = time.perf_counter()
    while not ready:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL_S)
        if not ready and time.perf_counter() - last >= PROGRESS_S:
            report()
            last = time.perf_counter()
    return ready


def _where(place: str, rounds: int, began: float, run_id: str) -> str:
    """One running run's progress, from the rounds its folder has logged (every round is flushed
    by default) where this node can read them; its time otherwise."""
    text = f"  {run_id}: "
    try:
        rows = read_rounds(place).to_pandas() if not is_uri(place) and has_logs(place) else None
    except Exception:  # a part being replaced, or damaged: the run itself will say so
        rows = None
    if rows is not None and len(rows):
        text += f"round {int(rows['round'].iloc[-1])}/{rounds}"
        tested = rows.dropna(subset=["test_accuracy"])
        if len(tested):
            last = tested.iloc[-1]
            text += f", test accuracy {last['test_accuracy']:.3f}"
            if "test_perplexity" in last and last["test_perplexity"] == last["test_perplexity"]:  # not NaN
                text += f", perplexity {last['test_perplexity']:.2f}"
            text += f" (round {int(last['round'])})"
        text += " | "
    return text + f"{time.perf_counter() - began:.0f} s"


def closing_table(outcomes: list[RunOutcome]) -> str:
    """The sweep's last words: one line per run, failures with their error."""
    width = max((len(o.run_id) for o in outcomes), default=6)
    lines = [f"{'run':<{width}}  status   seconds  final acc  error"]
    for o in outcomes:
        acc = f"{o.final_test_accuracy:.4f}" if o.final_test_accuracy is not None else "-"
        secs = f"{o.seconds:.0f}" if o.status != "skipped" else "-"
        lines.append(f"{o.run_id:<{width}}  {o.status:<7}  {secs:>7}  {acc:>9}  {o.error}")
    failed = [o.run_id for o in outcomes if o.status == "failed"]
    lines.append(
        f"{len(failed)} of {len(outcomes)} runs failed" + (f": {', '.join(failed)}" if failed else "")
    )
    return "\n".join(lines)
