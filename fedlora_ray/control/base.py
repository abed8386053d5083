"""What an uplink controller is: ``init`` once, ``plan`` each round, ``observe`` what happened.

A controller owns the run's client plan (sampling probabilities q_i and ratios s_i, with the
wall-clock objective of docs/algorithms.md §7 evaluated at them) and the per-round choice of the
keep ratio and the bandwidth split. Its changing state, the virtual queue
Q(t+1) = max(Q(t) + D(t) - D_bar, 0) [paper (30)] and the plan, is a ``ControllerState`` that
lives in the run state; the controller object itself holds only what the config fixes. Every
kind runs the queue, so every run logs how far it is from the delay budget. ``CONTROLLERS`` maps
``controller.kind`` to its class; ``register_controller`` adds one. A controller class imports no
torch (numpy only), so it is its own registry entry: config validation asks its ``validate``
and reads ``chooses_rank`` from it. Importing ``fedlora_ray.control`` registers the built-ins.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from fedlora_ray.channel import Uplink, equal_delay_shares
from fedlora_ray.compress.bits import Dims, entry_bits, full_sketch_bits, lora_entries
from fedlora_ray.compress.registry import compressor_spec
from fedlora_ray.config import RunConfig
from fedlora_ray.control import adaptive
from fedlora_ray.control.bound import bound


def components_for(ratio: float, rank: int) -> int:
    """k_i = round(s_i r), at least 1 (config validation keeps every option >= 1 component)."""
    return max(1, min(rank, round(ratio * rank)))


@dataclass(frozen=True)
class RoundPlan:
    keep_ratio: float
    shares: np.ndarray  # bandwidth share of each sampled client, in sampled order
    gain: np.ndarray  # h_i = |g_i|^2 10^(-PL_i/10)
    snr: np.ndarray
    bound: float  # Phi(r, rho) of the chosen rho
    queue: float  # Q(t) the choice was made with
    solve_seconds: float


@dataclass(frozen=True)
class ControllerState:
    """What a controller carries across rounds: the virtual queue and the client plan."""

    queue: float  # Q(t), in s
    q: np.ndarray  # sampling probability q_i per client (K / N unless planned)
    components: np.ndarray  # rank components k_i each client trains (r for the full rank)
    plan: adaptive.AdaptivePlan  # the objective of docs/algorithms.md §7 at (q, s)


class Controller:
    """Given rank and keep ratio; bandwidth by the paper's eq. (41). Subclasses change one
    answer each."""

    name: ClassVar[str] = ""
    chooses_rank: ClassVar[bool] = False  # ``prepare`` replaces model.lora_rank (in 1..max_rank)

    def __init__(self, cfg: RunConfig, dims: Dims, uplink: Uplink) -> None:
        self.cfg, self.dims, self.uplink = cfg, list(dims), uplink
        self.rank = cfg.model.lora_rank
        self.fixed_rho = 1.0 if compressor_spec(cfg.compression.method).dense else cfg.compression.keep_ratio
        self.q_bits = entry_bits(cfg.compression.value_bits, self.rank, self.dims)
        self.entries = lora_entries(self.rank, self.dims)
        self.problem: adaptive.AdaptiveProblem | None = None

    # ---- before the run
    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        """Raise ConfigError for settings this controller cannot run with."""

    @classmethod
    def prepare(cls, cfg: RunConfig, run_dir: str | Path | None = None) -> RunConfig:
        """The config the models are built from (TSFA's offline stage sets the rank here)."""
        return cfg

    def setup(self, data_share: np.ndarray, sizes: np.ndarray) -> adaptive.AdaptiveProblem:
        """The wall-clock problem of docs/algorithms.md §7 for these clients (fixed for the run)."""
        cfg, fed, ctl = self.cfg, self.cfg.federation, self.cfg.controller
        n, k = fed.num_clients, fed.clients_per_round
        full_bits = full_sketch_bits(self.rank, self.dims, cfg.compression.value_bits)
        self.problem = adaptive.AdaptiveProblem(
            share=data_share,
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
        return self.problem

    def init(self, ratios: np.ndarray) -> ControllerState:
        """The client plan for the run, from the scheme's ratios s_i: the wall-clock objective of
        docs/algorithms.md §7 at uniform q = K / N and those ratios (solved for instead by the
        adaptive controller). Needs ``setup`` first."""
        assert self.problem is not None, "call setup() first"
        plan, components = self.client_plan(self.problem, ratios)
        return ControllerState(0.0, plan.q, components, plan)

    def client_plan(
        self, problem: adaptive.AdaptiveProblem, ratios: np.ndarray
    ) -> tuple[adaptive.AdaptivePlan, np.ndarray]:  # noqa: E501
        components = np.array([components_for(x, self.rank) for x in ratios])
        return adaptive.uniform_plan(problem, components / self.rank), components

    # ---- each round
    def keep_ratio(self, state: ControllerState, snr: np.ndarray) -> float:
        return self.fixed_rho

    def planned_shares(self, snr: np.ndarray) -> np.ndarray:
        """Paper eq. (41): b_i proportional to 1 / log2(1 + gamma_i)."""
        return equal_delay_shares(snr)

    def plan(self, state: ControllerState, round_: int, sampled: np.ndarray) -> RoundPlan:
        fading = self.uplink.fading(round_, sampled)
        snr = self.uplink.mean_snr[sampled] * fading
        gain = fading * 10 ** (-self.uplink.path_loss_db[sampled] / 10)
        start = time.perf_counter()
        rho = self.keep_ratio(state, snr)
        solve_seconds = time.perf_counter() - start
        return RoundPlan(
            rho, self.planned_shares(snr), gain, snr, bound(self.cfg.controller, self.rank, rho), state.queue,
            solve_seconds,
        )  # fmt: skip

    def bandwidth(self, plan: RoundPlan, bits: np.ndarray, compute_s: np.ndarray) -> np.ndarray:
        """The shares the uplink is actually split with, once the bits and compute times are known."""
        return plan.shares

    def observe(self, state: ControllerState, upload_delay_s: float) -> ControllerState:
        """Q(t+1) = max(Q(t) + D(t) - D_bar, 0) [paper (30)], with the delay actually incurred."""
        queue = max(state.queue + upload_delay_s - self.cfg.controller.delay_budget_s, 0.0)
        return dataclasses.replace(state, queue=queue)


CONTROLLERS: dict[str, type[Controller]] = {}


def register_controller(cls: type[Controller]) -> type[Controller]:
    """Class decorator: make ``controller.kind: cls.name`` available."""
    CONTROLLERS[cls.name] = cls
    return cls


def controller_class(name: str) -> type[Controller]:
    return CONTROLLERS[name]


def make_controller(cfg: RunConfig, dims: Dims, uplink: Uplink) -> Controller:
    return controller_class(cfg.controller.kind)(cfg, dims, uplink)
