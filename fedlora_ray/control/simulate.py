"""Controller-only mode: the channel and controller without training, for long horizons.

Payloads come from the model's LoRA shapes: each sampled client sends the keep ratio's budget
of every module (values and positions, as the sparsifiers count them), or everything when
compression is off. 10,000 rounds take seconds; the property tests run on this.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedlora_ray.algorithm.sampling import sample_clients
from fedlora_ray.channel import Uplink
from fedlora_ray.compress import compressor
from fedlora_ray.compress.bits import sparse_upload_bits
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.control.base import ControllerState, make_controller


def simulate_uplink(cfg: RunConfig, rounds: int, dims: list[tuple[int, int]] | None = None) -> pd.DataFrame:
    """One row per round: rank, keep ratio, queue, delays, simulated time, bound, solve time."""
    from fedlora_ray.tasks import lora_module_dims

    # the payload model below is the sparsifiers' one, with K clients a round and no compute time
    if (
        cfg.algorithm.kind != "fedavg"
        or cfg.sampling.kind != "uniform"
        or cfg.controller.kind
        in (
            "finish",
            "adaptive",
        )
    ):
        raise ConfigError(
            "controller-only mode covers algorithm.kind='fedavg' with sampling.kind='uniform' and "
            f"controller.kind in equal/fixed/osfa/tsfa; got algorithm.kind={cfg.algorithm.kind!r}, "
            f"sampling.kind={cfg.sampling.kind!r}, controller.kind={cfg.controller.kind!r}"
        )
    from fedlora_ray.control.base import controller_class

    cfg = controller_class(cfg.controller.kind).prepare(cfg)  # TSFA's offline rank
    dims = dims or lora_module_dims(cfg.model)
    fed, comp = cfg.federation, cfg.compression
    uplink = Uplink(cfg.channel, fed.num_clients, fed.seed)
    controller = make_controller(cfg, dims, uplink)
    n = fed.num_clients
    share = np.full(n, 1.0 / n)
    controller.setup(share, np.zeros(n))
    state: ControllerState = controller.init(np.ones(n))
    dense = compressor(comp.method).dense
    rows, sim_time = [], 0.0
    for t in range(1, rounds + 1):
        sampled = sample_clients(fed.seed, t, fed.num_clients, fed.clients_per_round)
        plan = controller.plan(state, t, sampled)
        payload = sparse_upload_bits(controller.rank, dims, plan.keep_ratio, comp.value_bits, dense)
        bits = np.full(len(sampled), float(payload))
        upload = uplink.upload_seconds(bits, plan.shares, plan.snr)
        delay = float(upload.max())
        state = controller.observe(state, delay)
        sim_time += delay
        rows.append(
            (t, controller.rank, plan.keep_ratio, plan.queue, delay, sim_time, plan.bound, plan.solve_seconds)
        )
    columns = [
        "round",
        "lora_rank",
        "keep_ratio",
        "queue",
        "upload_delay_s",
        "sim_time_s",
        "bound",
        "solve_seconds",
    ]
    return pd.DataFrame(rows, columns=columns)
