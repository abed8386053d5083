"""What happens after each round: evaluation, the divergence guard, Parquet, checkpoints,
progress, and any user hook. Each is a ``Callback``; ``FederatedRun`` calls them in order with
the round's new state and its rows, which a callback may fill in (evaluation does) before the
logging callbacks write them."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from fedlora_ray.algorithm.backend import Backend
from fedlora_ray.algorithm.state import RunContext, RunState
from fedlora_ray.atomic_write import write_bytes
from fedlora_ray.config import RunConfig
from fedlora_ray.engine.checkpoint_state import save_state
from fedlora_ray.run_errors import DivergenceError
from fedlora_ray.rundir import RunLog
from fedlora_ray.rundir.checkpoint import checkpoint_rounds
from fedlora_ray.tasks import MODELS


class RunView(Protocol):
    """What a callback reads of the run that calls it (a ``FederatedRun``). Named here, rather
    than importing the run, because the run imports its callbacks."""

    @property
    def cfg(self) -> RunConfig: ...

    @property
    def backend(self) -> Backend: ...

    @property
    def ctx(self) -> RunContext: ...

    @property
    def state(self) -> RunState: ...

    @property
    def log(self) -> RunLog | None: ...

    @property
    def history(self) -> list[dict[str, Any]]: ...  # every earlier round's row (resumed: from the log)


class Callback:
    """Override what you need. ``row`` and ``client_rows`` are the round's log rows (dicts with
    the columns of rounds.parquet and clients.parquet)."""

    def on_round_end(
        self, run: RunView, state: RunState, row: dict[str, Any], client_rows: list[dict[str, Any]]
    ) -> None:  # noqa: E501
        pass

    def on_run_end(self, run: RunView, state: RunState, summary: dict[str, Any]) -> None:
        pass


class Evaluate(Callback):
    """Test loss and accuracy of the new global adapter every ``federation.eval_every`` rounds
    and after the last."""

    def on_round_end(self, run, state, row, client_rows):  # type: ignore[no-untyped-def]
        fed = run.cfg.federation
        if state.round % fed.eval_every and state.round != fed.rounds:
            return
        start = time.perf_counter()
        ev = run.backend.evaluate(state.adapter)
        row["test_accuracy"], row["test_loss"] = ev.accuracy, ev.loss
        if ev.loss is not None and MODELS[run.cfg.model.name].modality == "instructions":
            # a causal LM's test loss is the token-weighted NLL of held-out responses (§13)
            row["test_perplexity"] = math.exp(ev.loss) if ev.loss < 700 else math.inf
        spent = time.perf_counter() - start
        row["round_seconds"] += spent
        row["elapsed_seconds"] += spent


class Generate(Callback):
    """Causal LMs: greedy answers to ``federation.generations`` held-out prompts after the last
    round (and every ``federation.generate_every``), appended to RUN_DIR/generations.jsonl; the
    round's ``exact_match`` is the share equal to their references [docs/algorithms.md §13]."""

    FILE = "generations.jsonl"

    def on_round_end(self, run, state, row, client_rows):  # type: ignore[no-untyped-def]
        fed = run.cfg.federation
        due = state.round == fed.rounds or (fed.generate_every and state.round % fed.generate_every == 0)
        if not due or fed.generations == 0:
            return
        start = time.perf_counter()
        rows = run.backend.generate(state.adapter)
        if not rows:  # a classifier
            return
        row["exact_match"] = sum(r["exact_match"] for r in rows) / len(rows)
        if run.log is not None:
            path = run.log.dir / self.FILE
            # a resumed run redoes the rounds after its checkpoint: their earlier lines go
            kept = [
                line for line in (path.read_text().splitlines() if path.is_file() else [])
                if json.loads(line)["round"] < state.round
            ]  # fmt: skip
            new = [json.dumps({"round": state.round, **r}, sort_keys=True) for r in rows]
            write_bytes(path, ("\n".join(kept + new) + "\n").encode())
        spent = time.perf_counter() - start
        row["round_seconds"] += spent
        row["elapsed_seconds"] += spent


def finite_adapter(state: RunState) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.adapter.tensors())


def blow_up(values: list[float | None], factor: float, patience: int) -> tuple[int, float, float] | None:
    """Whether the last ``patience`` values of a loss series all exceed ``factor`` x the best
    value before each of them [docs/algorithms.md §9, ours]: (how many in a row, the last value,
    the best before it), or None. Missing and non-finite values are skipped (NaN and inf have
    their own check); the series is a run's logged history plus the current round."""
    best, streak = math.inf, 0
    last = None
    for v in values:
        if v is None or not math.isfinite(v):
            continue
        streak = streak + 1 if 0 < best < math.inf and v > factor * best else 0
        last = (streak, v, best)
        best = min(best, v)
    if last is None or last[0] < patience:
        return None
    return last


class DivergenceGuard(Callback):
    """Non-finite global factors or test loss, or a finite blow-up: the test loss (or the train
    loss) above ``federation.divergence_factor`` x its best so far for
    ``federation.divergence_patience`` evaluations (rounds) in a row. Stop with an error naming
    the round (the logs and checkpoint keep the last good round), or flag the round when
    ``federation.on_divergence`` is 'flag' [docs/algorithms.md §9].

    The blow-up check keeps no state of its own: it reads the run's history of logged rows (a
    resumed run reads them back from its log), so a resumed run decides exactly as one that never
    stopped."""

    def on_round_end(self, run, state, row, client_rows):  # type: ignore[no-untyped-def]
        fed = run.cfg.federation
        loss = row.get("test_loss")
        bad = []
        if not finite_adapter(state):
            bad.append("the global LoRA factors or head hold NaN or inf")
        if loss is not None and not math.isfinite(loss):
            bad.append(f"the test loss is {loss}")
        if fed.divergence_factor > 0:
            for column, unit in (("test_loss", "evaluations"), ("train_loss", "rounds")):
                if row.get(column) is None:  # no new value this round: nothing new to judge
                    continue
                series = [r.get(column) for r in run.history] + [row[column]]
                hit = blow_up(series, fed.divergence_factor, fed.divergence_patience)
                if hit is not None:
                    streak, value, best = hit
                    bad.append(
                        f"the {column.replace('_', ' ')} {value:.4g} is above "
                        f"federation.divergence_factor = {fed.divergence_factor:g} x its best so far "
                        f"({best:.4g}) for {streak} {unit} in a row "
                        f"(federation.divergence_patience = {fed.divergence_patience})"
                    )
        if not bad:
            return
        if fed.on_divergence == "flag":
            row["diverged"] = True
            return
        looser = (
            ", raise federation.divergence_factor or federation.divergence_patience (0 turns the "
            "factor check off)"
            if any("divergence_factor" in b for b in bad)
            else ""
        )
        raise DivergenceError(
            f"round {state.round}: the run diverged ({'; '.join(bad)}). The logs and checkpoint end at "
            f"the last good round; lower federation.lr (now {fed.lr:g}) or algorithm.server_lr (now "
            f"{run.cfg.algorithm.server_lr:g}){looser}, or set federation.on_divergence=flag to log "
            "such rounds and go on"
        )


class ParquetLog(Callback):
    def on_round_end(self, run, state, row, client_rows):  # type: ignore[no-untyped-def]
        if run.log is not None:
            run.log.append_round(row, client_rows)


class Checkpoint(Callback):
    """Every ``checkpoint.every`` rounds and after the last: flush the logs, then write the state
    (so the logs always hold every round the newest checkpoint has). The client store first
    writes its RAM states changed since the last checkpoint to their files, and every file the
    state refers to reaches the disk; the checkpoint holds their index (client -> version), and
    the store keeps each file while a kept checkpoint refers to it [docs/algorithms.md §10]."""

    def on_round_end(self, run, state, row, client_rows):  # type: ignore[no-untyped-def]
        ck = run.cfg.checkpoint
        if run.log is None or (state.round % ck.every and state.round != run.cfg.federation.rounds):
            return
        write_checkpoint(run.log, state, ck.keep)


def write_checkpoint(log: RunLog, state: RunState, keep: int) -> None:
    """The logs flushed, the client states in their files, then the checkpoint of ``state``
    (docs/algorithms.md §10); the store then frees what only deleted checkpoints held."""
    log.flush()
    state.clients.persist()  # type: ignore[attr-defined]  # the engine's own store
    save_state(log.dir, state, log.config, keep)
    state.clients.checkpointed(state.round, checkpoint_rounds(log.dir))  # type: ignore[attr-defined]


def format_progress(row: dict[str, Any], rounds: int) -> str:
    def num(key: str, fmt: str) -> str:
        value = row.get(key)
        return format(value, fmt) if value is not None else "-"

    line = (
        f"round {row['round']:>4}/{rounds} | {row['sampled']:>3} clients | "
        f"loss {num('train_loss', '.4f')} | acc {num('test_accuracy', '.3f')} | "
        f"cov {num('covariance', '.3g')} | {row['uplink_bits'] / 1e6:7.2f} Mbit | "
        f"sim {row['sim_time_s']:8.1f} s | {row['elapsed_seconds']:7.1f} s"
    )
    if row.get("test_perplexity") is not None:  # a causal LM's evaluation (docs/algorithms.md §13)
        line += f" | ppl {row['test_perplexity']:.2f}"
    if row.get("dp_epsilon") is not None:
        line += f" | eps {row['dp_epsilon']:.3g}"
    notes = [f"{row[k]} {k}" for k in ("rejected", "retries") if row.get(k)]
    if row.get("diverged"):
        notes.append("DIVERGED")
    return line + (" | " + ", ".join(notes) if notes else "")


class Progress(Callback):
    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def on_round_end(self, run, state, row, client_rows):  # type: ignore[no-untyped-def]
        self.write(format_progress(row, run.cfg.federation.rounds))


def describe_plan(run: RunView) -> str:
    """One line on the adaptive controller's plan for the run."""
    state, problem = run.state.controller, run.ctx.controller.problem
    assert problem is not None
    n = len(state.q)
    uniform = problem.objective(np.full(n, problem.k / n), np.ones(n))
    ratios, counts = np.unique(state.components / run.cfg.model.lora_rank, return_counts=True)
    plan = state.plan
    return (
        f"adaptive plan: objective {plan.objective:.3g} (uniform q, s = 1: {uniform:.3g}), "
        f"E[round] {plan.expected_round_s:.3g} s, q in [{state.q.min():.3f}, {state.q.max():.3f}], "
        f"s: {dict(zip(ratios.round(4).tolist(), counts.tolist()))}, "
        f"solved in {plan.solve_seconds:.1f} s"
    )
