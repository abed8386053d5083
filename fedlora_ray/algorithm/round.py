"""One federated round as a function: (state, context, backend) -> (state, round row, client rows).

It reads top to bottom: sample -> plan -> local updates through the Backend -> screen ->
aggregate -> client store -> simulated clock. Evaluation, logging, checkpoints and progress are
callbacks that run after it (``algorithm.callbacks``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from fedlora_ray.algorithm.aggregate import covariance_term
from fedlora_ray.algorithm.backend import Backend
from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.algorithm.sampling import RoundWeights, client_seed
from fedlora_ray.algorithm.server_opt import server_step
from fedlora_ray.algorithm.state import RunContext, RunState
from fedlora_ray.compress import apply_payload
from fedlora_ray.control import ControllerState, RoundPlan
from fedlora_ray.control.clock import ClockStep, clock_step
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.lora.orthogonality import orthogonality_error
from fedlora_ray.privacy.mechanism import central_noise_generator, central_release
from fedlora_ray.run_errors import BadUpdateError


def match_replies(tasks: list[ClientTask], replies: list[ClientReply]) -> list[ClientReply]:
    """The replies in the tasks' order, matched by client id; exactly one reply per task."""
    by_id = {r.client_id: r for r in replies}
    wanted = [t.client_id for t in tasks]
    if len(replies) != len(tasks) or sorted(by_id) != sorted(wanted):
        raise RuntimeError(
            f"the backend answered for clients {sorted(r.client_id for r in replies)}, "
            f"but the round asked for {sorted(wanted)}"
        )
    return [by_id[c] for c in wanted]


def is_finite(reply: ClientReply) -> bool:
    """Every sent LoRA value and head entry is a real number."""
    tensors = [p.value for p in reply.payload.values()] + list(reply.head.values())
    return all(bool(torch.isfinite(t).all()) for t in tensors) and math.isfinite(reply.local_loss)


def round_step(
    state: RunState, ctx: RunContext, backend: Backend
) -> tuple[RunState, dict[str, Any], list[dict[str, Any]]]:
    cfg, fed = ctx.cfg, ctx.cfg.federation
    t = state.round + 1
    start = time.perf_counter()
    ctl = state.controller

    # 1. Who takes part: K clients uniformly, or each with its own q_i; a function of (seed, t).
    sampled = ctx.sampling.sample(t, ctl.q)

    # 2. The controller draws the round's channels and picks the keep ratio and the band split.
    plan = ctx.controller.plan(ctl, t, sampled)

    # 3. Local training through the backend: each client starts from the global adapter and its
    #    own stored state (error memory), and trains its k_i components.
    dp = ctx.privacy
    local_sigma = dp.sigma if dp is not None and not dp.central else None
    tasks = [ClientTask(int(i), t, client_seed(fed.seed, t, int(i)), ctx.partition[i],
                        state.clients.get(int(i), {}), plan.keep_ratio, int(ctl.components[i]), local_sigma)
             for i in sampled]  # fmt: skip
    replies = match_replies(tasks, backend.train(state.adapter, tasks) if tasks else [])

    # 4. Screen the uploads: a NaN or inf never reaches the aggregate [docs/algorithms.md §9].
    accepted = np.array([is_finite(r) for r in replies], dtype=bool)
    if not accepted.all() and fed.on_bad_update == "fail":
        bad = [r.client_id for r, ok in zip(replies, accepted) if not ok]
        raise BadUpdateError(
            f"round {t}: client(s) {bad} sent a non-finite update (federation.on_bad_update = 'fail')"
        )
    kept = [r for r, ok in zip(replies, accepted) if ok]
    ids = np.array([r.client_id for r in kept], dtype=np.int64)

    # 5. Aggregate the accepted uploads with the round's weights, then the server step.
    weights = ctx.sampling.weights(ids, ctx.data_share, ctl.q)
    held = [ctx.scheme.held(apply_payload(state.adapter, r.payload, r.head), int(ctl.components[r.client_id]))
            for r in kept]  # fmt: skip
    adapter, server_opt = state.adapter, state.server_opt
    clipped = None
    if dp is not None and dp.central:
        # every round releases the noised sum, an empty one too [docs/algorithms.md §14]: each
        # upload weighted by omega_i = (p_i / q_i) K_bar, clipped to C, and the sum over K_bar
        k_bar = float(ctl.q.sum())
        omega = ctx.data_share[ids] / ctl.q[ids] * k_bar
        release = central_release(
            state.adapter, held, omega.tolist(), k_bar, dp.clip_norm, dp.sigma,
            central_noise_generator(fed.seed, t), ctx.scheme.trains_a,
        )  # fmt: skip
        clipped = release.clipped
        adapter, server_opt = server_step(cfg.algorithm, server_opt, state.adapter, release.update)
    elif kept:
        update = ctx.scheme.aggregate(state.adapter, held, weights, ctl.components[ids])
        adapter, server_opt = server_step(cfg.algorithm, server_opt, state.adapter, update)

    # 6. The client store keeps what each accepted client carries to its next round: a new
    #    snapshot, in RAM up to runtime.client_store_mem_mb and then on disk; the old one stays
    #    valid until the callbacks accept the new state [docs/algorithms.md §10].
    clients = state.clients.updated(t, {r.client_id: r.state for r in kept if r.state})

    # 7. The uplink on the simulated clock: the bits actually sent, compute at each client's
    #    speed; the round lasts until its slowest participant is done [paper (6)-(7)].
    bits = np.array([r.bits_sent for r in replies], dtype=np.float64)
    samples = np.array([r.examples * fed.local_epochs for r in replies])
    clock = clock_step(ctx.uplink, ctx.controller, ctl, plan, sampled, bits, samples, cfg.model.lora_rank)
    new = RunState(t, adapter, server_opt, clock.controller, clients, state.sim_time + clock.round_delay)

    # 8. What the round did: one row, and one row per participant.
    row = round_row(new, ctx, ctl, plan, replies, kept, held, accepted, clock)
    row["dp_epsilon"] = dp.epsilon(t) if dp is not None else None
    row["dp_clipped"] = clipped
    row["round_seconds"] = time.perf_counter() - start
    client_rows = participant_rows(new, ctl, plan, replies, accepted, weights, clock)
    return new, row, client_rows


def round_row(
    new: RunState, ctx: RunContext, ctl: ControllerState, plan: RoundPlan, replies: list[ClientReply],
    kept: list[ClientReply], held: list[Adapter], accepted: np.ndarray, clock: ClockStep,
) -> dict[str, Any]:  # fmt: skip
    """The round's row of rounds.parquet (test columns filled in by the evaluation callback)."""
    ids = np.array([r.client_id for r in kept], dtype=np.int64)
    data_w = ctx.data_share[ids]
    orth_a, orth_b = orthogonality_error(new.adapter.lora.values())
    return {
        "round": new.round,
        "sampled": len(replies),
        "examples": sum(r.examples for r in replies),
        "train_loss": float(sum(w * r.local_loss for w, r in zip(data_w, kept)) / data_w.sum())
        if kept
        else None,
        "test_accuracy": None,
        "test_loss": None,
        "covariance": covariance_term(held, data_w.tolist()) if held else None,
        "uplink_bits": sum(r.bits_sent for r in replies),
        "kept_entries": sum(r.kept_entries for r in replies),
        "keep_ratio": plan.keep_ratio,
        "queue": plan.queue,
        "bound": plan.bound,
        "upload_delay_s": clock.upload_delay,
        "round_delay_s": clock.round_delay,
        "sim_time_s": new.sim_time,
        "solve_seconds": plan.solve_seconds,
        "orth_error_a": orth_a,
        "orth_error_b": orth_b,
        "lora_rank": ctx.cfg.model.lora_rank,
        "client_seconds": sum(r.train_seconds for r in replies),
        "objective": ctl.plan.objective,
        "expected_round_s": ctl.plan.expected_round_s,
        "rejected": int((~accepted).sum()),
        "retries": sum(r.attempt - 1 for r in replies),
        "diverged": False,
        "dp_epsilon": None,
        "dp_clipped": None,
        "test_perplexity": None,
        "exact_match": None,
        "round_seconds": None,  # the wall clock, filled in once the round's work is done
    }


def participant_rows(
    new: RunState, ctl: ControllerState, plan: RoundPlan, replies: list[ClientReply], accepted: np.ndarray,
    weights: RoundWeights, clock: ClockStep,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row of clients.parquet per participant, with the weight its update entered with
    (0 for a rejected upload)."""
    used = dict(zip([r.client_id for r, ok in zip(replies, accepted) if ok], weights.values.tolist()))
    return [
        {
            "round": new.round,
            "client_id": r.client_id,
            "examples": r.examples,
            "weight": float(used.get(r.client_id, 0.0)),
            "steps": r.steps,
            "local_loss": r.local_loss,
            "bits_sent": r.bits_sent,
            "kept_entries": r.kept_entries,
            "distortion": r.distortion,
            "actor_id": r.actor_id,
            "train_seconds": r.train_seconds,
            "channel_gain": float(plan.gain[j]),
            "snr_db": float(10 * np.log10(plan.snr[j])),
            "bandwidth_share": float(clock.shares[j]),
            "upload_s": float(clock.upload[j]),
            "compute_s": float(clock.compute[j]),
            "sample_prob": float(ctl.q[r.client_id]),
            "components": int(ctl.components[r.client_id]),
            "rejected": not bool(accepted[j]),
            "attempt": r.attempt,
        }
        for j, r in enumerate(replies)
    ]
