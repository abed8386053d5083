"""The run as one explicit state, and what a run fixes once (its context).

``RunState`` holds everything that changes across rounds; checkpointing is writing it and
resuming is reading it. Randomness needs no state: every draw is a pure function of
(seed, round, client) [docs/algorithms.md §10]. ``RunContext`` holds what the config and the
data fix for the whole run: the scheme, the controller, the sampler, the partition, the clients'
resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedlora_ray.algorithm.sampling import SAMPLINGS, Sampling
from fedlora_ray.algorithm.schemes import Scheme, make_scheme
from fedlora_ray.algorithm.server_opt import ServerOptState
from fedlora_ray.channel import Uplink
from fedlora_ray.config import RunConfig
from fedlora_ray.control import Controller, ControllerState, make_controller
from fedlora_ray.lora.adapter import Adapter
from fedlora_ray.privacy.plan import PrivacyPlan


class ClientStates(Protocol):
    """Each client's state between its rounds (its error memory), as the round sees it. The
    engine's ``ClientStore`` is the one in use: in RAM up to a cap, then in versioned files."""

    def get(self, client: int, default: dict[str, Any], /) -> dict[str, Any]: ...

    def updated(self, round_: int, states: Mapping[int, dict[str, Any]]) -> ClientStates:
        """A new snapshot with ``states`` replacing those of their clients."""
        ...


@dataclass(frozen=True)
class RunState:
    round: int  # rounds finished (0 before the first)
    adapter: Adapter  # the global LoRA factors and head
    server_opt: ServerOptState  # server Adam's moments (empty for sgd)
    controller: ControllerState  # virtual queue and the client plan (q_i, k_i)
    clients: ClientStates  # per-client state: error memory
    sim_time: float = 0.0  # simulated clock, s


@dataclass(frozen=True)
class RunContext:
    cfg: RunConfig
    scheme: Scheme
    controller: Controller
    sampling: Sampling
    partition: list[np.ndarray]  # training example indices of each client
    sizes: np.ndarray  # n_i
    data_share: np.ndarray  # p_i = n_i / sum_j n_j
    label_names: tuple[str, ...]
    uplink: Uplink
    privacy: PrivacyPlan | None = None  # planned once the controller's q_i are known


def build_context(
    cfg: RunConfig, adapter: Adapter, partition: list[np.ndarray], label_names: tuple[str, ...]
) -> RunContext:
    """Everything fixed for the run: the clients' training examples (``partition``, drawn once
    before the run from the training labels), their drawn resources, and the scheme,
    controller and sampler the config names."""
    fed = cfg.federation
    sizes = np.array([len(p) for p in partition], dtype=np.float64)
    data_share = sizes / sizes.sum()  # p_i
    uplink = Uplink(cfg.channel, fed.num_clients, fed.seed)
    dims = [(b.shape[0], a.shape[1]) for b, a in adapter.lora.values()]
    controller = make_controller(cfg, dims, uplink)
    controller.setup(data_share, sizes)
    return RunContext(
        cfg=cfg,
        scheme=make_scheme(cfg),
        controller=controller,
        sampling=SAMPLINGS[cfg.sampling.kind](fed.seed, fed.num_clients, fed.clients_per_round),
        partition=partition,
        sizes=sizes,
        data_share=data_share,
        label_names=label_names,
        uplink=uplink,
    )


def initial_state(ctx: RunContext, adapter: Adapter, clients: ClientStates) -> RunState:
    """Round 0: the seeded initial adapter, the controller's plan for the run, and ``clients``,
    an empty client store."""
    fed = ctx.cfg.federation
    ratios = ctx.scheme.client_ratios(fed.num_clients, fed.seed)
    controller = ctx.controller.init(ratios)
    return RunState(0, adapter.clone(), ServerOptState(), controller, clients, 0.0)
