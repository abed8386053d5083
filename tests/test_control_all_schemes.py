"""Controller-only mode for every scheme, compressor, controller and sampler: it runs, its payload
model counts what the real uploads count. Its clock is the real round's own function
(fedlora_ray.control.clock), so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from conftest import tiny_config

from fedlora_ray.algorithm.schemes import SCHEMES, make_scheme, register_scheme
from fedlora_ray.algorithm.schemes.base import LocalUpdate, Scheme
from fedlora_ray.compress import COMPRESSORS, compressor
from fedlora_ray.config import ConfigError
from fedlora_ray.control import CONTROLLERS
from fedlora_ray.control.controller_only import (
    module_upload,
    simulate_control,
    upload_cost,
)

TINY_DIMS = [(64, 64)] * 4  # the tiny BERT's query and value in its two layers
CLOCK = ["channel.compute_samples_per_s=40", "channel.compute_sigma=1", "channel.tx_power_sigma_db=4"]


def _accepted_configs():
    """Every (scheme, compressor, controller, sampler) that the tiny config accepts."""
    out, samplers = [], ("uniform", "independent")
    for kind, method, ctl, samp in itertools.product(SCHEMES, COMPRESSORS, CONTROLLERS, samplers):
        try:
            cfg = tiny_config(
                "model.lora_rank=8", f"algorithm.kind={kind}", f"compression.method={method}",
                f"controller.kind={ctl}", f"sampling.kind={samp}", "controller.max_rank=8", *CLOCK,
                # FedLoDrop's budget at rho = 0.1 is short of one component: allowed, to test it
                "compression.allow_empty_upload=true",
            )  # fmt: skip
        except ConfigError:
            continue
        out.append(pytest.param(cfg, id=f"{kind}-{method}-{ctl}-{samp}"))
    return out


ACCEPTED = _accepted_configs()


def test_the_grid_holds_every_scheme_compressor_controller_and_sampler():
    ids = [p.id for p in ACCEPTED]
    assert {i.split("-")[0] for i in ids} == set(SCHEMES) == {"fedavg", "fslora", "hetlora", "ffa"}
    assert {i.split("-")[1] for i in ids} == set(COMPRESSORS)
    assert {i.split("-")[2] for i in ids} == set(CONTROLLERS)
    assert {i.split("-")[3] for i in ids} == {"uniform", "independent"}
    assert "fslora-none-adaptive-independent" in ids


@pytest.mark.parametrize("cfg", ACCEPTED)
def test_every_accepted_combination_runs_and_keeps_the_clock(cfg):
    log = simulate_control(cfg, 12, TINY_DIMS, sizes=np.arange(40.0, 46.0), head_entries=520)
    r, c = log.rounds, log.clients
    assert r["round"].tolist() == list(range(1, 13))
    assert r["sim_time_s"].to_numpy() == pytest.approx(r["round_delay_s"].cumsum().to_numpy())
    assert (r["round_delay_s"] >= r["upload_delay_s"]).all()
    assert (r["objective"] > 0).all() and (r["expected_round_s"] > 0).all()
    by_round = c.groupby("round")
    assert r.set_index("round")["uplink_bits"].to_dict() == by_round["bits_sent"].sum().to_dict()
    assert r["sampled"].sum() == len(c)
    if cfg.sampling.kind == "uniform":
        assert (r["sampled"] == cfg.federation.clients_per_round).all()
    # the band is used once; every upload carries LoRA entries beyond the head's 520 values, but
    # FedLoDrop's, whose budget (rho r (d + k) = 0.8 (d + k) at rho = 0.1) is short of one component
    assert by_round["bandwidth_share"].sum().to_numpy() == pytest.approx(1.0)
    lora_bits = c["bits_sent"] - 32 * 520  # values, plus positions or indices where sent
    assert (lora_bits >= 32 * c["kept_entries"]).all()
    assert ((lora_bits == 0) == (c["kept_entries"] == 0)).all()
    if cfg.compression.method != "fedlodrop":
        assert (c["kept_entries"] > 0).all()
    assert (c["compute_s"] > 0).all()
    slowest = by_round["upload_s"].max().to_dict()
    assert r.set_index("round")["upload_delay_s"].to_dict() == pytest.approx(slowest)
    comps = c["components"].to_numpy()
    if cfg.algorithm.kind in ("fslora", "hetlora"):  # k_i of r components, (d + k) entries each
        assert (c["kept_entries"] == comps * 4 * 128).all() and (comps < 8).any()
    else:
        assert (comps == 8).all()


# ---- the payload model against the code that counts real uploads


def _random_update(dims, rank, seed):
    gen = torch.Generator().manual_seed(seed)
    delta = {f"m{i}": (torch.randn(d, rank, generator=gen), torch.randn(rank, k, generator=gen))
             for i, (d, k) in enumerate(dims)}  # fmt: skip
    local = {m: (ub + 0.1, ua - 0.1) for m, (ub, ua) in delta.items()}
    return delta, local


@pytest.mark.parametrize("method", sorted(COMPRESSORS))
def test_compressor_payload_model_counts_what_the_compressor_sends(method):
    cfg = tiny_config(f"compression.method={method}", "compression.value_bits=16")
    dims, rank = [(48, 20), (7, 33), (64, 64)], 6
    delta, local = _random_update(dims, rank, 0)
    for rho in (0.01, 0.07, 0.2, 0.5, 0.93, 1.0):
        comp = dataclasses.replace(cfg.compression, keep_ratio=rho)
        sent = compressor(method).compress(delta, local, comp, torch.Generator().manual_seed(1))
        assert upload_cost(module_upload(cfg), dims, rank, rank, rho, 16) == (sent.kept, sent.bits), rho


@pytest.mark.parametrize("kind", sorted(k for k in SCHEMES if k != "fedavg"))  # fedavg: its compressor
def test_scheme_payload_model_counts_what_the_scheme_sends(kind):
    cfg = tiny_config(f"algorithm.kind={kind}", "model.lora_rank=8")
    scheme, dims = make_scheme(cfg), [(48, 20), (7, 33), (64, 64)]
    delta, local = _random_update(dims, 8, 2)
    for k in (1, 3, 8):
        components = scheme.components(123, list(delta), k)
        sent, _ = scheme.upload(LocalUpdate(delta, local, components, None, {}, 123))
        assert upload_cost(module_upload(cfg), dims, 8, k, 1.0, 32) == (sent.kept, sent.bits), k


def test_a_scheme_without_a_payload_model_is_refused_by_name():
    class Silent(Scheme):
        name = "silent"

    register_scheme(Silent)
    try:
        cfg = tiny_config("algorithm.kind=silent")
        with pytest.raises(ConfigError, match="'algorithm.kind' = 'silent'"):
            simulate_control(cfg, 3, TINY_DIMS, sizes=np.full(6, 40.0), head_entries=0)
    finally:
        del SCHEMES["silent"]
    with pytest.raises(ConfigError, match="--rounds"):
        simulate_control(tiny_config(), 0, TINY_DIMS, sizes=np.full(6, 40.0), head_entries=0)
    for sizes in (np.full(5, 40.0), np.full(6, 40.5), np.zeros(6)):
        with pytest.raises(ValueError, match="each of 6 clients"):
            simulate_control(tiny_config(), 3, TINY_DIMS, sizes=sizes, head_entries=0)
