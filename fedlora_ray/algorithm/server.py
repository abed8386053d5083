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

from fedlora_ray.algorithm.aggregate import covariance_term, fedavg
from fedlora_ray.algorithm.backend import Backend
from fedlora_ray.algorithm.messages import ClientTask
from fedlora_ray.algorithm.sampling import client_seed, sample_clients
from fedlora_ray.channel import Uplink
from fedlora_ray.compress import apply_payload
from fedlora_ray.config import RunConfig
from fedlora_ray.control import UplinkController
from fedlora_ray.data import load_wordnet, partition_indices
from fedlora_ray.logging import RunLog
from fedlora_ray.lora import save_adapter
from fedlora_ray.lora.orthogonality import orthogonality_error


def format_progress(row: dict[str, Any], rounds: int) -> str:
    acc = row.get("test_accuracy")
    acc_text = f"acc {acc:.3f}" if acc is not None else "acc   -  "
    return (
        f"round {row['round']:>4}/{rounds} | loss {row['train_loss']:.4f} | {acc_text} | "
        f"cov {row['covariance']:.3g} | {row['uplink_bits'] / 1e6:7.2f} Mbit | "
        f"{row['elapsed_seconds']:7.1f} s"
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
        self.sim_time = 0.0
        self.client_state: dict[int, dict[str, Any]] = {}
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.log = RunLog(run_dir, cfg.to_dict(), cfg.log.flush_every) if run_dir else None
        self.progress = (progress or _print_flush) if cfg.runtime.progress else None
        self._start = time.perf_counter()

    def run_round(self) -> dict[str, Any]:
        """One round [seed II-B]: sample S_t, local training, separate averaging of B and A."""
        cfg, fed = self.cfg, self.cfg.federation
        t = self.round + 1
        round_start = time.perf_counter()
        sampled = sample_clients(fed.seed, t, fed.num_clients, fed.clients_per_round)
        plan = self.controller.plan(t, sampled)
        tasks = [
            ClientTask(
                int(i),
                t,
                client_seed(fed.seed, t, int(i)),
                self.partition[i],
                self.client_state.get(int(i), {}),
                plan.keep_ratio,
            )
            for i in sampled
        ]
        replies = sorted(self.backend.train(self.global_adapter, tasks), key=lambda r: r.client_id)
        weights = [float(self.data_share[r.client_id]) for r in replies]
        uploads = [apply_payload(self.global_adapter, r.payload, r.head) for r in replies]
        self.global_adapter = fedavg(uploads, weights)
        orth_a, orth_b = orthogonality_error(self.global_adapter.lora.values())
        for r in replies:
            if r.state:
                self.client_state[r.client_id] = r.state
        # the uplink, on the simulated clock: bits actually sent over the planned shares
        bits = np.array([r.bits_sent for r in replies], dtype=np.float64)
        upload = self.uplink.upload_seconds(bits, plan.shares, plan.snr)
        compute = self.uplink.compute_seconds(
            sampled, np.array([r.examples * fed.local_epochs for r in replies])
        )
        upload_delay = float(upload.max())
        round_delay = float((upload + compute).max())  # the slowest sampled client [seed (7)]
        self.controller.observe(upload_delay)
        self.sim_time += round_delay
        wsum = sum(weights)
        row: dict[str, Any] = {
            "round": t,
            "sampled": len(replies),
            "examples": sum(r.examples for r in replies),
            "train_loss": sum(w * r.local_loss for w, r in zip(weights, replies)) / wsum,
            "test_accuracy": None,
            "test_loss": None,
            "covariance": covariance_term(uploads, weights),
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
                "weight": w / wsum,
                "steps": r.steps,
                "local_loss": r.local_loss,
                "bits_sent": r.bits_sent,
                "kept_entries": r.kept_entries,
                "distortion": r.distortion,
                "actor_id": r.actor_id,
                "train_seconds": r.train_seconds,
                "channel_gain": float(plan.gain[j]),
                "snr_db": float(10 * np.log10(plan.snr[j])),
                "bandwidth_share": float(plan.shares[j]),
                "upload_s": float(upload[j]),
                "compute_s": float(compute[j]),
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
        }
        if self.log:
            self.log.close()
            if self.cfg.log.save_adapter:
                save_adapter(self.global_adapter, self.cfg.model, self.label_names, self.log.dir / "adapter")
            self.log.write_json("summary.json", summary)
        return summary
