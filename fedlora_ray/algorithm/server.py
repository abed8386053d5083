"""The server's round loop over any Backend: sample, train, aggregate, evaluate, log.

It holds the global adapter, the partition and the per-client state store. The serial
simulator drives it in one process; the Ray ``DriverActor`` holds one and drives it there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedlora_ray.algorithm import schemes
from fedlora_ray.algorithm.aggregate import aggregate_update, covariance_term, hetlora_target, zero_pad
from fedlora_ray.algorithm.backend import Backend
from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.algorithm.sampling import (
    aggregation_weights,
    client_seed,
    sample_clients,
    sample_independent,
)
from fedlora_ray.algorithm.server_opt import ServerOptimizer
from fedlora_ray.channel import Uplink
from fedlora_ray.compress import apply_payload
from fedlora_ray.config import RunConfig
from fedlora_ray.control import UplinkController, adaptive
from fedlora_ray.data import load_wordnet, partition_indices
from fedlora_ray.logging import RunLog
from fedlora_ray.lora import Adapter, save_adapter
from fedlora_ray.lora.orthogonality import orthogonality_error


def format_progress(row: dict[str, Any], rounds: int) -> str:
    def num(key: str, fmt: str) -> str:
        value = row.get(key)
        return format(value, fmt) if value is not None else "-"

    return (
        f"round {row['round']:>4}/{rounds} | {row['sampled']:>3} clients | "
        f"loss {num('train_loss', '.4f')} | acc {num('test_accuracy', '.3f')} | "
        f"cov {num('covariance', '.3g')} | {row['uplink_bits'] / 1e6:7.2f} Mbit | "
        f"sim {row['sim_time_s']:8.1f} s | {row['elapsed_seconds']:7.1f} s"
    )


def _print_flush(line: str) -> None:
    print(line, flush=True)  # flushed: a Ray actor's stdout reaches the job log line by line


class FederatedRun:
    def __init__(
        self,
        cfg: RunConfig,
        backend: Backend,
        run_dir: str | Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        fed = cfg.federation
        train, _ = load_wordnet(cfg.data)
        self.label_names = train.label_names
        self.partition = partition_indices(train.labels, fed.num_clients, cfg.data, fed.seed)
        sizes = np.array([len(p) for p in self.partition], dtype=np.float64)
        self.data_share = sizes / sizes.sum()  # p_i
        self.global_adapter = backend.initial_adapter()
        self.uplink = Uplink(cfg.channel, fed.num_clients, fed.seed)
        dims = [(b.shape[0], a.shape[1]) for b, a in self.global_adapter.lora.values()]
        self.controller = UplinkController(cfg, dims, self.uplink)
        self.server_opt = ServerOptimizer(cfg.algorithm)
        self._plan_clients(sizes, dims)
        self.sim_time = 0.0
        self.client_state: dict[int, dict[str, Any]] = {}
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.log = RunLog(run_dir, cfg.to_dict(), cfg.log.flush_every) if run_dir else None
        if self.log:
            self.log.write_profile(self.client_profile(sizes))
        self.progress = (progress or _print_flush) if cfg.runtime.progress else None
        if self.progress and cfg.controller.kind == "adaptive":
            self.progress(self._describe_plan())
        self._start = time.perf_counter()

    def _describe_plan(self) -> str:
        n = len(self.q)
        uniform = self.problem.objective(np.full(n, self.problem.k / n), np.ones(n))
        ratios, counts = np.unique(self.ratio, return_counts=True)
        return (
            f"adaptive plan: objective {self.plan.objective:.3g} (uniform q, s = 1: {uniform:.3g}), "
            f"E[round] {self.plan.expected_round_s:.3g} s, q in [{self.q.min():.3f}, {self.q.max():.3f}], "
            f"s: {dict(zip(ratios.round(4).tolist(), counts.tolist()))}, "
            f"solved in {self.plan.solve_seconds:.1f} s"
        )

    def _plan_clients(self, sizes: np.ndarray, dims: list[tuple[int, int]]) -> None:
        """Per-client sampling probability q_i, ratio s_i and components k_i for the run, and
        the wall-clock objective of ALGORITHMS 7 at them (solved for when controller.kind is
        'adaptive'; evaluated at uniform q and the drawn ratios otherwise)."""
        cfg, fed, alg, ctl = self.cfg, self.cfg.federation, self.cfg.algorithm, self.cfg.controller
        n, k, rank = fed.num_clients, fed.clients_per_round, cfg.model.lora_rank
        ratio = np.ones(n)
        if alg.kind in ("fslora", "hetlora"):
            ratio = schemes.client_ratios(fed.seed, n, alg.client_ratios)
        full_bits = adaptive.full_upload_bits(rank, dims, cfg.compression.value_bits)
        self.problem = adaptive.AdaptiveProblem(
            share=self.data_share,
            grad_sq=np.full(n, ctl.grad_sq),
            tau=self.uplink.compute_seconds(np.arange(n), sizes * fed.local_epochs),
            upload=full_bits / (cfg.channel.bandwidth_hz * np.log2(1 + self.uplink.mean_snr) / k),
            omega=cfg.channel.compute_fixed_share,
            options=ctl.sketch_options,
            k=float(k),
            q_min=cfg.sampling.q_min,
            q_max=cfg.sampling.q_max,
            a0=ctl.a0,
            a1=ctl.a1,
            a2=ctl.a2,
        )
        if ctl.kind == "adaptive":
            self.plan = adaptive.solve(self.problem)
            ratio = self.plan.s
        self.components = np.array([schemes.components_for(x, rank) for x in ratio])
        self.ratio = self.components / rank  # what each client really trains, after rounding
        if ctl.kind != "adaptive":
            self.plan = adaptive.uniform_plan(self.problem, self.ratio)
        self.q = self.plan.q

    def client_profile(self, sizes: np.ndarray) -> list[dict[str, Any]]:
        """One row per client: its drawn resources and the run's q_i and s_i."""
        up, prob = self.uplink, self.problem
        return [
            {
                "client_id": i,
                "examples": int(sizes[i]),
                "data_share": float(self.data_share[i]),
                "distance_m": float(up.distance_m[i]),
                "tx_power_w": float(up.tx_power_w[i]),
                "mean_snr_db": float(10 * np.log10(up.mean_snr[i])),
                "samples_per_s": float(up.samples_per_s[i]),
                "compute_full_s": float(prob.tau[i]),
                "upload_full_s": float(prob.upload[i]),
                "sample_prob": float(self.q[i]),
                "sketch_ratio": float(self.ratio[i]),
                "components": int(self.components[i]),
            }
            for i in range(len(sizes))
        ]

    def _sample(self, t: int) -> np.ndarray:
        fed = self.cfg.federation
        if self.cfg.sampling.kind == "independent":
            return sample_independent(fed.seed, t, self.q)
        return sample_clients(fed.seed, t, fed.num_clients, fed.clients_per_round)

    def _aggregate(self, replies: list[ClientReply], weights: np.ndarray) -> list[Adapter]:
        """Apply the round's uploads to the global adapter; returns the uploads as the server
        holds them (for the covariance term)."""
        uploads = [apply_payload(self.global_adapter, r.payload, r.head) for r in replies]
        if self.cfg.algorithm.kind == "hetlora":
            uploads = [zero_pad(u, int(self.components[r.client_id])) for u, r in zip(uploads, replies)]
            target = hetlora_target(uploads, [float(self.data_share[r.client_id]) for r in replies])
            update = aggregate_update(self.global_adapter, [target], [1.0])
        else:
            update = aggregate_update(self.global_adapter, uploads, weights.tolist())
        self.global_adapter = self.server_opt.step(self.global_adapter, update)
        return uploads

    def run_round(self) -> dict[str, Any]:
        """One round [seed II-B]: sample S_t, local training, aggregation of B and A."""
        cfg, fed = self.cfg, self.cfg.federation
        t = self.round + 1
        round_start = time.perf_counter()
        sampled = self._sample(t)
        sketched = cfg.algorithm.kind in ("fslora", "hetlora")
        plan = self.controller.plan(t, sampled)
        tasks = [
            ClientTask(
                int(i),
                t,
                client_seed(fed.seed, t, int(i)),
                self.partition[i],
                self.client_state.get(int(i), {}),
                plan.keep_ratio,
                int(self.components[i]) if sketched else None,
            )
            for i in sampled
        ]
        replies = (
            sorted(self.backend.train(self.global_adapter, tasks), key=lambda r: r.client_id) if tasks else []
        )
        weights = aggregation_weights(cfg.sampling.kind, sampled, self.data_share, self.q)
        uploads = self._aggregate(replies, weights) if replies else []
        orth_a, orth_b = orthogonality_error(self.global_adapter.lora.values())
        for r in replies:
            if r.state:
                self.client_state[r.client_id] = r.state
        # the uplink, on the simulated clock: bits actually sent, compute at each client's speed
        bits = np.array([r.bits_sent for r in replies], dtype=np.float64)
        compute = self.uplink.compute_seconds(
            sampled, np.array([r.examples * fed.local_epochs for r in replies]), self.ratio[sampled]
        )
        shares = self.controller.bandwidth(plan, bits, compute)
        upload = self.uplink.upload_seconds(bits, shares, plan.snr)
        upload_delay = float(upload.max(initial=0.0))
        round_delay = float((upload + compute).max(initial=0.0))  # the slowest participant [seed (7)]
        self.controller.observe(upload_delay)
        self.sim_time += round_delay
        data_w = np.array([self.data_share[r.client_id] for r in replies])
        wsum = float(data_w.sum())
        row: dict[str, Any] = {
            "round": t,
            "sampled": len(replies),
            "examples": sum(r.examples for r in replies),
            "train_loss": sum(w * r.local_loss for w, r in zip(data_w, replies)) / wsum if replies else None,
            "test_accuracy": None,
            "test_loss": None,
            "covariance": covariance_term(uploads, data_w.tolist()) if uploads else None,
            "uplink_bits": sum(r.bits_sent for r in replies),
            "kept_entries": sum(r.kept_entries for r in replies),
            "keep_ratio": plan.keep_ratio,
            "queue": plan.queue,
            "bound": plan.bound,
            "upload_delay_s": upload_delay,
            "round_delay_s": round_delay,
            "sim_time_s": self.sim_time,
            "solve_seconds": plan.solve_seconds,
            "orth_error_a": orth_a,
            "orth_error_b": orth_b,
            "lora_rank": cfg.model.lora_rank,
            "client_seconds": sum(r.train_seconds for r in replies),
            "objective": self.plan.objective,
            "expected_round_s": self.plan.expected_round_s,
        }
        if t % fed.eval_every == 0 or t == fed.rounds:
            ev = self.backend.evaluate(self.global_adapter)
            row["test_accuracy"], row["test_loss"] = ev.accuracy, ev.loss
        now = time.perf_counter()
        row["round_seconds"] = now - round_start
        row["elapsed_seconds"] = now - self._start
        client_rows = [
            {
                "round": t,
                "client_id": r.client_id,
                "examples": r.examples,
                "weight": float(w),
                "steps": r.steps,
                "local_loss": r.local_loss,
                "bits_sent": r.bits_sent,
                "kept_entries": r.kept_entries,
                "distortion": r.distortion,
                "actor_id": r.actor_id,
                "train_seconds": r.train_seconds,
                "channel_gain": float(plan.gain[j]),
                "snr_db": float(10 * np.log10(plan.snr[j])),
                "bandwidth_share": float(shares[j]),
                "upload_s": float(upload[j]),
                "compute_s": float(compute[j]),
                "sample_prob": float(self.q[r.client_id]),
                "components": int(self.components[r.client_id]),
            }
            for j, (w, r) in enumerate(zip(weights, replies))
        ]
        if self.log:
            self.log.append_round(row, client_rows)
        self.history.append(row)
        self.round = t
        if self.progress:
            self.progress(format_progress(row, fed.rounds))
        return row

    def run(self) -> dict[str, Any]:
        """All remaining rounds; then the adapter and a summary go into the run directory."""
        while self.round < self.cfg.federation.rounds:
            self.run_round()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        evaluated = [r for r in self.history if r["test_accuracy"] is not None]
        summary = {
            "rounds": self.round,
            "final_test_accuracy": evaluated[-1]["test_accuracy"] if evaluated else None,
            "final_test_loss": evaluated[-1]["test_loss"] if evaluated else None,
            "best_test_accuracy": max((r["test_accuracy"] for r in evaluated), default=None),
            "uplink_bits": sum(r["uplink_bits"] for r in self.history),
            "elapsed_seconds": time.perf_counter() - self._start,
            "workers": self.backend.describe(),
            "sim_time_s": self.sim_time,
            "objective": self.plan.objective,
            "objective_rounds": self.plan.rounds,
            "expected_round_s": self.plan.expected_round_s,
            "adaptive_solve_seconds": self.plan.solve_seconds,
        }
        if self.log:
            self.log.close()
            if self.cfg.log.save_adapter:
                save_adapter(self.global_adapter, self.cfg.model, self.label_names, self.log.dir / "adapter")
            self.log.write_json("summary.json", summary)
        return summary
