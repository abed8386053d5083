"""Controller-only mode: a run's sampling, channel, controller and simulated clock, with no training
[ours; the clock it reproduces is docs/algorithms.md §4, the controllers §5 and §7].

Each round does what ``fedlora_ray.algorithm.round.round_step`` does, minus the training:
- the clients are drawn by the run's own sampler (``SAMPLINGS[sampling.kind]``: K of N, or each
  client with its q_i from the controller's plan), so they are the ones a real run draws;
- the controller plans the round (fading, keep ratio, planned band shares);
- each participant's upload is priced as its scheme counts it, from the LoRA module shapes and
  the plan alone (``upload_cost``): a sparsifier's K_m entries per module with their positions,
  FedLoDrop's whole components, FSLoRA's k_i-of-r sketch with its component indices, HetLoRA's
  k_i-component prefix, FFA's B, or everything; plus the trained head's values, as
  ``ClientTrainer`` adds them;
- compute takes each participant's examples x local epochs at its speed, scaled by its k_i / r;
- the controller splits the band once the bits and compute times are known, and the round lasts
  until its slowest participant has computed and uploaded.

What a client holds: by default the real partition of the training split (its labels only, read
as the run reads them: about a second for WordNet, no pixels for image datasets), so the compute
clock is the real run's; ``sizes`` overrides it. The head's entries come from the built model
(0 when ``model.train_head`` is false); ``head_entries`` overrides it.

Every upload size is a function of the config and the plan, with one exception: FLASC with
``compression.flasc_scope: global`` picks the top entries over all modules at once, so how many
land in each module (and so the position bits) depends on the trained update; this mode prices
it as per-module budgets. With ``controller.calibrate``, TSFA's pilot run (which trains) still
comes first. 10,000 rounds take seconds; the long-horizon tests run on this.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedlora_ray.algorithm.sampling import SAMPLINGS
from fedlora_ray.algorithm.schemes import make_scheme
from fedlora_ray.channel import Uplink
from fedlora_ray.compress.bits import Dims, ModuleUpload
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.control.base import ControllerState, controller_class, make_controller
from fedlora_ray.control.clock import clock_step
from fedlora_ray.preflight import check_upload_budget
from fedlora_ray.privacy.plan import plan_privacy


def module_upload(cfg: RunConfig) -> ModuleUpload:
    """The run's per-module payload model: its scheme's, which for FedAvg is its compressor's
    (ConfigError for a registered scheme that has none)."""
    from fedlora_ray.algorithm.schemes import make_scheme

    return make_scheme(cfg).module_upload


def upload_cost(
    upload: ModuleUpload, dims: Dims, rank: int, components: int, keep_ratio: float, value_bits: int
) -> tuple[int, int]:
    """One client's LoRA upload over all modules: (entries sent, bits). Modules of one shape cost
    the same, so each shape is priced once (MiniLM's twelve modules are one)."""
    entries = bits = 0
    for (d, k), count in Counter(dims).items():
        e, b = upload(d, k, rank, components, keep_ratio, value_bits)
        entries, bits = entries + count * e, bits + count * b
    return entries, bits


def client_data(cfg: RunConfig) -> tuple[np.ndarray, int]:
    """(examples per client, number of labels): the training split's labels dealt as the run
    deals them: the run's own preflight (``data.partition``, seeded by ``federation.seed``)."""
    from fedlora_ray.preflight import check_data

    data = check_data(cfg)
    return np.array([len(p) for p in data.partition], dtype=np.float64), len(data.label_names)


def trained_head_entries(cfg: RunConfig, num_labels: int) -> int:
    """Entries of the head every upload carries: those of the built model's trained head, as
    ``ClientTrainer`` counts them (0 when ``model.train_head`` is false)."""
    if not cfg.model.train_head:
        return 0
    from fedlora_ray.lora.adapter import get_adapter
    from fedlora_ray.tasks import model_family

    model = model_family(cfg.model.name).build(cfg.model, num_labels, cfg.federation.seed)
    return sum(t.numel() for t in get_adapter(model).head.values())


@dataclass(frozen=True)
class ControlLog:
    """What controller-only mode writes: one row per round (rounds.parquet's clock and controller
    columns) and one row per participant (clients.parquet's channel and payload columns)."""

    rounds: pd.DataFrame
    clients: pd.DataFrame


ROUND_COLUMNS = [
    "round", "lora_rank", "keep_ratio", "queue", "upload_delay_s", "sim_time_s", "bound", "solve_seconds",
    "round_delay_s", "sampled", "examples", "uplink_bits", "kept_entries", "objective", "expected_round_s",
]  # fmt: skip
CLIENT_COLUMNS = [
    "round", "client_id", "examples", "bits_sent", "kept_entries", "channel_gain", "snr_db",
    "bandwidth_share", "upload_s", "compute_s", "sample_prob", "components",
]  # fmt: skip


def simulate_control(
    cfg: RunConfig,
    rounds: int,
    dims: Dims | None = None,
    sizes: np.ndarray | None = None,
    head_entries: int | None = None,
) -> ControlLog:
    """``rounds`` rounds of the run ``cfg`` without training. ``dims``: the LoRA modules' (d, k)
    (default: read from the model config); ``sizes``: examples per client (default: the real
    partition); ``head_entries``: trained head entries per upload (default: the built model's)."""
    if rounds < 1:
        raise ConfigError(f"the number of rounds (--rounds) = {rounds}: must be >= 1")
    upload = module_upload(cfg)
    cfg = controller_class(cfg.controller.kind).prepare(cfg)  # TSFA's offline rank
    fed, rank = cfg.federation, cfg.model.lora_rank
    if sizes is None or head_entries is None:
        data_sizes, num_labels = client_data(cfg)
        sizes = data_sizes if sizes is None else sizes
        head_entries = trained_head_entries(cfg, num_labels) if head_entries is None else head_entries
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.shape != (fed.num_clients,) or not ((sizes >= 1) & (sizes == np.round(sizes))).all():
        raise ValueError(f"sizes must hold a whole example count >= 1 for each of {fed.num_clients} clients")
    if dims is None:
        from fedlora_ray.tasks import lora_module_dims

        dims = lora_module_dims(cfg.model)
    check_upload_budget(cfg, dims)  # a fixed keep ratio that sends nothing is refused, as a run's is
    head_bits = cfg.compression.value_bits * head_entries

    # what build_context and initial_state fix for the run
    uplink = Uplink(cfg.channel, fed.num_clients, fed.seed)
    controller = make_controller(cfg, dims, uplink)
    controller.setup(sizes / sizes.sum(), sizes)
    sampling = SAMPLINGS[cfg.sampling.kind](fed.seed, fed.num_clients, fed.clients_per_round)
    state: ControllerState = controller.init(make_scheme(cfg).client_ratios(fed.num_clients, fed.seed))
    initial_q = state.q
    costs: dict[tuple[int, float], tuple[int, int]] = {}  # (k_i, rho) -> (entries, LoRA bits)

    round_rows, client_parts, sim_time = [], [], 0.0
    for t in range(1, rounds + 1):
        sampled = sampling.sample(t, state.q)
        plan = controller.plan(state, t, sampled)
        kept, lora_bits = np.zeros(len(sampled), dtype=np.int64), np.zeros(len(sampled), dtype=np.int64)
        for j, c in enumerate(state.components[sampled].tolist()):
            key = (c, plan.keep_ratio)
            if key not in costs:
                costs[key] = upload_cost(upload, dims, rank, c, plan.keep_ratio, cfg.compression.value_bits)
            kept[j], lora_bits[j] = costs[key]
        sent = lora_bits + head_bits
        examples = sizes[sampled].astype(np.int64)
        clock = clock_step(uplink, controller, state, plan, sampled, sent, examples * fed.local_epochs, rank)
        sim_time += clock.round_delay
        round_rows.append((
            t, rank, plan.keep_ratio, plan.queue, clock.upload_delay, sim_time, plan.bound,
            plan.solve_seconds, clock.round_delay, len(sampled), int(examples.sum()), int(sent.sum()),
            int(kept.sum()), state.plan.objective, state.plan.expected_round_s,
        ))  # fmt: skip
        client_parts.append((
            np.full(len(sampled), t), sampled, examples, sent, kept, plan.gain, 10 * np.log10(plan.snr),
            clock.shares, clock.upload, clock.compute, state.q[sampled], state.components[sampled],
        ))  # fmt: skip
        state = clock.controller
    columns = [np.concatenate(parts) for parts in zip(*client_parts)]
    clients = pd.DataFrame(dict(zip(CLIENT_COLUMNS, columns)))
    frame = pd.DataFrame(round_rows, columns=ROUND_COLUMNS)
    privacy = plan_privacy(cfg, initial_q)
    if privacy is not None:  # the epsilon a run would have spent after each round (§14)
        frame["dp_epsilon"] = [privacy.epsilon(t) for t in range(1, rounds + 1)]
    return ControlLog(frame, clients)


def simulate_uplink(
    cfg: RunConfig,
    rounds: int,
    dims: Dims | None = None,
    sizes: np.ndarray | None = None,
    head_entries: int | None = None,
) -> pd.DataFrame:
    """One row per round: rank, keep ratio, queue, upload and round delays, simulated time,
    bound, solve time, participants, bits, and the client plan's objective (``simulate_control``)."""
    return simulate_control(cfg, rounds, dims, sizes, head_entries).rounds
