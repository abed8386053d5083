"""A federated run: its state, the round function, and the callbacks after each round.

``FederatedRun`` is the one path every run takes: prepare the config (TSFA's offline rank),
build (the backend, and the context from the clients' data the preflight read once), start
from round 0 or resume from the newest checkpoint, then repeat ``round_step`` -> callbacks
until ``federation.rounds``. The serial backend drives it in one process; the Ray
``DriverActor`` drives it there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedlora_ray.algorithm.backend import Backend
from fedlora_ray.algorithm.round import round_step
from fedlora_ray.algorithm.state import build_context, initial_state
from fedlora_ray.config import RunConfig
from fedlora_ray.control import controller_class
from fedlora_ray.engine.callbacks import (
    Callback,
    Checkpoint,
    DivergenceGuard,
    Evaluate,
    Generate,
    ParquetLog,
    Progress,
    describe_plan,
    write_checkpoint,
)
from fedlora_ray.engine.checkpoint_state import resume_state
from fedlora_ray.engine.client_store import CLIENT_STORE_DIR, ClientStore
from fedlora_ray.preflight import ClientData, check_data
from fedlora_ray.privacy.plan import plan_privacy
from fedlora_ray.rundir import RunLog
from fedlora_ray.rundir.checkpoint import checkpoint_rounds

BackendFactory = Callable[[RunConfig], Backend]


def _print_flush(line: str) -> None:
    print(line, flush=True)  # flushed: a Ray actor's stdout reaches the job log line by line


class FederatedRun:
    def __init__(
        self,
        cfg: RunConfig,
        backend: Backend | BackendFactory,
        run_dir: str | Path | None = None,
        progress: Callable[[str], None] | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        resume: bool = False,
        data: ClientData | None = None,
        prepared: bool = False,
    ) -> None:
        """``backend`` is a Backend, or a factory called with the prepared config (so that TSFA's
        offline rank reaches the models). With ``resume``, ``cfg`` is the run directory's
        (``resume_config``) and the run continues from its newest checkpoint. ``data``: the
        clients' data as the preflight read and dealt it (read here when not given).
        ``prepared``: the caller prepared ``cfg`` already (the Ray driver does, to start the
        client actors on it before it loads torch)."""
        if resume and run_dir is None:
            raise ValueError("resuming needs the run directory")
        if not resume and not prepared:
            cfg = controller_class(cfg.controller.kind).prepare(cfg, run_dir)
        self.cfg = cfg
        built = hasattr(backend, "train") and not isinstance(backend, type)
        self.backend: Backend = backend if built else backend(cfg)  # type: ignore[operator,assignment]
        if data is None:  # a run built by hand (tests, notebooks): the preflight's one read
            data = check_data(cfg)
        initial = self.backend.initial_adapter()
        rank = next(iter(initial.lora.values()))[0].shape[1]
        if rank != cfg.model.lora_rank:
            raise ValueError(
                f"the backend's models have LoRA rank {rank}, the run needs {cfg.model.lora_rank} "
                f"(controller.kind={cfg.controller.kind!r} chose it): pass the backend's class or a "
                "factory, which is built from the prepared config"
            )
        self.ctx = build_context(cfg, initial, data.partition, data.label_names)
        store_dir = Path(run_dir) / CLIENT_STORE_DIR if run_dir is not None else None
        write = (progress or _print_flush) if cfg.runtime.progress else None
        # Verified before anything of the run is written: a damaged newest checkpoint is named
        # and the newest intact one used; with none intact nothing changes (docs/algorithms.md §10).
        saved = resume_state(Path(run_dir), store_dir, write or _print_flush) if resume and run_dir else None
        if saved is not None:
            clients = ClientStore.resume(
                saved.clients,  # type: ignore[arg-type]  # the engine's own store, as checkpointed
                store_dir,
                cfg.runtime.client_store_mem_mb,
                saved.round,
                checkpoint_rounds(run_dir),  # type: ignore[arg-type]
            )
            self.state = dataclasses.replace(saved, clients=clients)
        else:
            store = ClientStore.create(store_dir, cfg.runtime.client_store_mem_mb)
            self.state = initial_state(self.ctx, initial, store)
        # the privacy plan needs the controller's q_i; a target epsilon is met by solving sigma now,
        # before anything of the run is written (the same solve on a resume: the same sigma)
        privacy = plan_privacy(cfg, self.state.controller.q)
        self.ctx = dataclasses.replace(self.ctx, privacy=privacy)
        self.log: RunLog | None = None
        if run_dir is not None:
            self.log = RunLog(
                run_dir, cfg.to_dict(), cfg.log.flush_every, self.state.round if resume else None
            )
            if resume:
                self.log.write_json("config.json", self.log.config)  # an extended run's new length
            else:
                self.log.write_profile(self.client_profile())
        self.history: list[dict[str, Any]] = self.log.rows("rounds") if self.log else []
        self.callbacks: list[Callback] = [
            Evaluate(),
            Generate(),
            DivergenceGuard(),
            ParquetLog(),
            Checkpoint(),
        ]
        if write:
            self.callbacks.append(Progress(write))
        self.callbacks += list(callbacks)
        if write and resume:
            write(f"resuming {run_dir} after round {self.state.round} of {cfg.federation.rounds}")
        elif write and self.state.controller.plan.iterations > 0:
            write(describe_plan(self))
        if write and privacy is not None:
            write(privacy.describe(cfg.federation.rounds))
        self.stopped_by_privacy = False
        self._start = time.perf_counter()

    # ---- views of the state, for tests and notebooks
    @property
    def round(self) -> int:
        return self.state.round

    @property
    def global_adapter(self):  # type: ignore[no-untyped-def]
        return self.state.adapter

    @property
    def client_state(self) -> Mapping[int, dict[str, Any]]:
        """Client id -> its stored state (read from disk for the states the store spilled)."""
        assert isinstance(self.state.clients, ClientStore)
        return self.state.clients

    @property
    def partition(self) -> list[np.ndarray]:
        return self.ctx.partition

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.ctx.label_names

    def client_profile(self) -> dict[str, np.ndarray]:
        """profile.parquet's columns, one entry per client: its drawn resources and the run's q_i
        and s_i (built column by column: at 100,000 clients a row of dicts costs over 100 MB)."""
        up, prob, ctl = self.ctx.uplink, self.ctx.controller.problem, self.state.controller
        assert prob is not None
        n = len(self.ctx.sizes)
        return {
            "client_id": np.arange(n, dtype=np.int32),
            "examples": self.ctx.sizes.astype(np.int64),
            "data_share": np.asarray(self.ctx.data_share, dtype=np.float64),
            "distance_m": np.asarray(up.distance_m, dtype=np.float64),
            "tx_power_w": np.asarray(up.tx_power_w, dtype=np.float64),
            "mean_snr_db": 10 * np.log10(np.asarray(up.mean_snr, dtype=np.float64)),
            "samples_per_s": np.asarray(up.samples_per_s, dtype=np.float64),
            "compute_full_s": np.asarray(prob.tau, dtype=np.float64),
            "upload_full_s": np.asarray(prob.upload, dtype=np.float64),
            "sample_prob": np.asarray(ctl.q, dtype=np.float64),
            "sketch_ratio": np.asarray(ctl.components, dtype=np.float64) / self.cfg.model.lora_rank,
            "components": np.asarray(ctl.components).astype(np.int32),
        }

    def run_round(self) -> dict[str, Any]:
        """One round, then the callbacks; the state moves on only when they all pass."""
        state, row, client_rows = round_step(self.state, self.ctx, self.backend)
        row["elapsed_seconds"] = time.perf_counter() - self._start
        for callback in self.callbacks:
            callback.on_round_end(self, state, row, client_rows)
        self.state = state
        self.history.append(row)
        return row

    def run(self) -> dict[str, Any]:
        """All remaining rounds; then the adapter and a summary go into the run directory."""
        while self.state.round < self.cfg.federation.rounds:
            privacy = self.ctx.privacy
            if privacy is not None and not privacy.allows(self.state.round + 1):
                self._stop_within_privacy_budget()
                break
            self.run_round()
        return self.finish()

    def _stop_within_privacy_budget(self) -> None:
        """The next round would spend more than privacy.max_epsilon: the run ends here, with a
        checkpoint of this round (a later resume stops at once) [docs/algorithms.md §14]."""
        privacy = self.ctx.privacy
        assert privacy is not None
        t = self.state.round
        self.stopped_by_privacy = True
        if self.log is not None and t > 0 and t not in checkpoint_rounds(self.log.dir):
            write_checkpoint(self.log, self.state, self.cfg.checkpoint.keep)
        _print_flush(
            f"privacy budget: round {t + 1} would spend epsilon {privacy.epsilon(t + 1):.4g} > "
            f"privacy.max_epsilon = {privacy.max_epsilon:g}; the run stops after round {t} "
            f"(epsilon {privacy.epsilon(t):.4g}), with its checkpoint"
        )

    def finish(self) -> dict[str, Any]:
        evaluated = [r for r in self.history if r["test_accuracy"] is not None]
        plan = self.state.controller.plan
        summary = {
            "run_id": self.log.run_id if self.log else (self.cfg.log.run_id or self.cfg.name),
            "rounds": self.state.round,
            "final_test_accuracy": evaluated[-1]["test_accuracy"] if evaluated else None,
            "final_test_loss": evaluated[-1]["test_loss"] if evaluated else None,
            "best_test_accuracy": max((r["test_accuracy"] for r in evaluated), default=None),
            "uplink_bits": sum(r["uplink_bits"] for r in self.history),
            "elapsed_seconds": time.perf_counter() - self._start,
            "pool": self.backend.pool(),
            "workers": self.backend.describe(),
            "sim_time_s": self.state.sim_time,
            "rejected_uploads": sum(r["rejected"] or 0 for r in self.history),
            "retried_clients": sum(r["retries"] or 0 for r in self.history),
            "objective": plan.objective,
            "objective_rounds": plan.rounds,
            "expected_round_s": plan.expected_round_s,
            "adaptive_solve_seconds": plan.solve_seconds,
        }
        if self.ctx.privacy is not None:
            summary["dp_epsilon"] = self.ctx.privacy.epsilon(self.state.round)
            summary["dp_delta"] = self.ctx.privacy.delta
            summary["dp_noise_multiplier"] = self.ctx.privacy.sigma
            summary["stopped_by_privacy_budget"] = self.stopped_by_privacy
        if self.log:
            self.log.close()
            if self.cfg.log.save_adapter:
                from fedlora_ray.lora.save import save_adapter

                save_adapter(
                    self.state.adapter, self.cfg.model, self.ctx.label_names, self.log.dir / "adapter",
                    self.backend.adapter_config_json(),  # peft's text, from a worker: no peft here
                )  # fmt: skip
            self.log.write_json("summary.json", summary)
        for callback in self.callbacks:
            callback.on_run_end(self, self.state, summary)
        return summary
