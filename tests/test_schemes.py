"""FSLoRA, HetLoRA and FFA-LoRA: what each client trains and sends, and how the server combines it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from fedlora_ray.algorithm.aggregate import aggregate_update, hetlora_target, zero_pad
from fedlora_ray.algorithm.messages import ClientTask
from fedlora_ray.algorithm.schemes import draw_client_ratios, make_scheme
from fedlora_ray.algorithm.schemes.fslora import sketch_components
from fedlora_ray.algorithm.server_opt import ServerOptState, server_step
from fedlora_ray.compress import apply_payload
from fedlora_ray.compress.base import rank_component_positions
from fedlora_ray.config import replace
from fedlora_ray.engine.trainer import ClientTrainer
from fedlora_ray.lora.adapter import Adapter, lora_parameters, set_adapter
from fedlora_ray.lora.rank_mask import lora_b_modules, rank_mask

RANK = 8


def _trainer(kind: str) -> ClientTrainer:
    return ClientTrainer(
        tiny_config(f"algorithm.kind={kind}", f"model.lora_rank={RANK}", "model.lora_alpha=16")
    )


def _start(trainer: ClientTrainer, seed: int = 0) -> Adapter:
    """The initial adapter with a random B, so that A gets gradient too."""
    start = trainer.initial_adapter()
    gen = torch.Generator().manual_seed(seed)
    for m, (b, a) in start.lora.items():
        start.lora[m] = (0.05 * torch.randn(b.shape, generator=gen), a)
    return start


def _train_one(trainer: ClientTrainer, start: Adapter, components: int | None, client: int = 1):
    """The client's reply and its locally trained factors, as the scheme received them."""
    task = ClientTask(client, 1, 1234 + client, np.arange(0, 40), {}, None, components)
    seen = []
    upload = trainer.scheme.upload
    trainer.scheme.upload = lambda update: seen.append(update) or upload(update)  # type: ignore[method-assign]
    try:
        (reply,) = trainer.train(start, [task])
    finally:
        del trainer.scheme.upload
    return reply, Adapter(seen[0].local, reply.head)


@pytest.fixture(scope="module")
def fslora_trainer() -> ClientTrainer:
    return _trainer("fslora")


def test_rank_mask_is_b_diag_s_a_and_gives_no_gradient_outside(fslora_trainer):
    model = fslora_trainer.model
    start = _start(fslora_trainer)
    set_adapter(model, start)
    ids = fslora_trainer.train_data.input_ids[:4, :16]
    mask = fslora_trainer.train_data.attention_mask[:4, :16]
    keep = torch.tensor([1, 5])
    scale = {m: torch.zeros(RANK).index_fill_(0, keep, RANK / 2) for m in lora_b_modules(model)}
    with rank_mask(lora_b_modules(model), scale):
        masked = model(ids, mask)
        masked.square().sum().backward()
    # the same forward with B replaced by B diag(s) and no hook
    with torch.no_grad():
        scaled = start.clone()
        for m, (b, a) in scaled.lora.items():
            scaled.lora[m] = (b * scale[m], a)
        set_adapter(model, scaled)
        torch.testing.assert_close(model(ids, mask), masked.detach(), rtol=1e-5, atol=1e-6)
    outside = torch.ones(RANK, dtype=torch.bool)
    outside[keep] = False
    for b, a in lora_parameters(model).values():
        assert (b.grad[:, outside] == 0).all() and (a.grad[outside, :] == 0).all()
        assert b.grad[:, keep].abs().sum() > 0 and a.grad[keep, :].abs().sum() > 0
        b.grad = a.grad = None


def test_fslora_trains_and_sends_only_the_sketch(fslora_trainer):
    start = _start(fslora_trainer)
    k = 2
    reply, local = _train_one(fslora_trainer, start, k)
    comps = sketch_components(1234 + 1, list(start.lora), RANK, k)
    assert len({tuple(c.tolist()) for c in comps.values()}) > 1  # one draw per module
    entries = 0
    for m, (b, a) in local.lora.items():
        d, kk = b.shape[0], a.shape[1]
        gb, ga = start.lora[m]
        inside = torch.zeros(RANK, dtype=torch.bool)
        inside[comps[m]] = True
        # entries outside the sketch never change on the client (AdamW's weight decay included)
        assert torch.equal(b[:, ~inside], gb[:, ~inside]) and torch.equal(a[~inside], ga[~inside])
        assert not torch.equal(b[:, inside], gb[:, inside]) and not torch.equal(a[inside], ga[inside])
        # the same index set for B's columns and A's rows, and nothing else, travels
        expected = torch.sort(rank_component_positions(d, RANK, kk)[comps[m]].reshape(-1)).values
        assert torch.equal(reply.payload[m].index, expected)
        entries += k * (d + kk)
    assert reply.kept_entries == entries  # k_i (d + k) per module
    index_bits = len(local.lora) * k * math.ceil(math.log2(RANK))
    head_bits = 32 * sum(t.numel() for t in reply.head.values())  # the trained head travels dense
    assert reply.bits_sent == entries * 32 + index_bits + head_bits
    # the server rebuilds the trained entries (X + (X_i - X), so to float rounding)
    rebuilt = apply_payload(start, reply.payload, reply.head)
    for m in local.lora:
        torch.testing.assert_close(rebuilt.lora[m][0], local.lora[m][0], rtol=0, atol=1e-7)
        torch.testing.assert_close(rebuilt.lora[m][1], local.lora[m][1], rtol=0, atol=1e-7)


def test_fslora_sketch_is_redrawn_each_round_and_scaled_r_over_k():
    a = sketch_components(11, ["m"], 16, 4)["m"]
    b = sketch_components(12, ["m"], 16, 4)["m"]
    assert not torch.equal(a, b) and a.numel() == 4 and len(set(a.tolist())) == 4
    fslora = make_scheme(tiny_config("algorithm.kind=fslora", "model.lora_rank=16", "model.lora_alpha=16"))
    s = fslora.component_scale({"m": a})["m"]
    assert torch.equal(s[a], torch.full((4,), 4.0)) and s.sum() == 16  # E[S] = I over draws
    # over many draws every component is picked with probability k / r
    counts = torch.zeros(16)
    for seed in range(2000):
        counts[sketch_components(seed, ["m"], 16, 4)["m"]] += 1
    assert (counts / 2000 - 0.25).abs().max() < 0.04


def test_hetlora_truncates_to_the_first_ranks():
    trainer = _trainer("hetlora")
    start = _start(trainer)
    reply, local = _train_one(trainer, start, 3)
    for m, (b, a) in local.lora.items():
        gb, ga = start.lora[m]
        assert torch.equal(b[:, 3:], gb[:, 3:]) and torch.equal(a[3:], ga[3:])
        assert not torch.equal(b[:, :3], gb[:, :3])
        d, kk = b.shape[0], a.shape[1]
        assert torch.equal(
            reply.payload[m].index, torch.sort(rank_component_positions(d, RANK, kk)[:3].reshape(-1)).values
        )
    head_bits = 32 * sum(t.numel() for t in reply.head.values())
    assert reply.bits_sent == reply.kept_entries * 32 + head_bits  # first-r_i needs no positions
    scale = trainer.scheme.component_scale({"m": torch.arange(3)})["m"]
    assert scale.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # truncation, not rescaled


def test_hetlora_aggregates_zero_padded_factors_weighted_by_norm():
    gen = torch.Generator().manual_seed(3)
    ups = []
    for scale in (1.0, 3.0):
        b, a = scale * torch.randn(6, 4, generator=gen), torch.randn(4, 5, generator=gen)
        ups.append(Adapter({"m": (b, a)}, {}))
    padded = [zero_pad(ups[0], 2), zero_pad(ups[1], 4)]
    assert (padded[0].lora["m"][0][:, 2:] == 0).all() and (padded[0].lora["m"][1][2:] == 0).all()
    out = hetlora_target(padded, [0.5, 0.5])
    norms = [float(torch.linalg.matrix_norm(p.lora["m"][0] @ p.lora["m"][1])) for p in padded]
    w = [n / sum(norms) for n in norms]
    torch.testing.assert_close(
        out.lora["m"][0], w[0] * padded[0].lora["m"][0] + w[1] * padded[1].lora["m"][0]
    )
    # components only the rank-4 client trains shrink by its weight: the zero padding's effect
    torch.testing.assert_close(out.lora["m"][1][2:], w[1] * ups[1].lora["m"][1][2:])


def test_ffa_freezes_a_and_sends_only_b():
    trainer = _trainer("ffa")
    start = _start(trainer)
    reply, local = _train_one(trainer, start, None)
    entries = 0
    for m, (b, a) in local.lora.items():
        assert torch.equal(a, start.lora[m][1]) and not torch.equal(b, start.lora[m][0])
        assert torch.equal(reply.payload[m].index, torch.arange(b.numel()))  # vec(B) comes first
        entries += b.numel()
    head_bits = 32 * sum(t.numel() for t in reply.head.values())
    assert reply.kept_entries == entries and reply.bits_sent == 32 * entries + head_bits


def test_fslora_server_step_moves_only_sketched_entries():
    """X <- X + (1/|S|) sum_i M_i * (X_i - X) with plain averaging (eta_s = 1)."""
    x = Adapter({"m": (torch.zeros(4, 8), torch.ones(8, 3))}, {})
    ups, masks = [], []
    for comps in ([0, 1], [1, 5]):
        u = x.clone()
        u.lora["m"][0][:, comps] += 1.0
        u.lora["m"][1][comps, :] += 2.0
        ups.append(u)
        masks.append(comps)
    update = aggregate_update(x, ups, [0.5, 0.5])
    new, _ = server_step(tiny_config().algorithm, ServerOptState(), x, update)
    b, a = new.lora["m"]
    assert b[:, 1].eq(1.0).all() and b[:, 0].eq(0.5).all() and b[:, 5].eq(0.5).all()
    untouched = [2, 3, 4, 6, 7]
    assert (b[:, untouched] == 0).all() and (a[untouched] == 1).all()
    assert a[1].eq(3.0).all() and a[0].eq(2.0).all()


def test_server_adam_first_step_is_lr_times_the_sign():
    cfg = replace(tiny_config(), "algorithm.server_optimizer=adam", "algorithm.server_lr=0.01").algorithm
    x = Adapter({"m": (torch.zeros(3, 2), torch.zeros(2, 3))}, {})
    u = Adapter({"m": (torch.tensor([[1.0, -2.0], [3e-3, 0.0], [-5.0, 1.0]]), torch.full((2, 3), -0.1))}, {})
    new, state = server_step(cfg, ServerOptState(), x, u)
    assert state.steps == 1 and len(state.m) == len(state.v) == 2
    expected = 0.01 * torch.sign(u.lora["m"][0])
    torch.testing.assert_close(new.lora["m"][0], expected, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(new.lora["m"][1], torch.full((2, 3), -0.01), atol=1e-6, rtol=1e-4)


def test_client_ratios_are_drawn_from_the_options_and_seeded():
    r1 = draw_client_ratios(0, 3000, (0.125, 0.25, 0.5))
    assert set(np.unique(r1)) == {0.125, 0.25, 0.5}
    assert np.allclose([np.mean(r1 == x) for x in (0.125, 0.25, 0.5)], 1 / 3, atol=0.03)
    assert np.array_equal(r1, draw_client_ratios(0, 3000, (0.125, 0.25, 0.5)))
    assert not np.array_equal(r1, draw_client_ratios(1, 3000, (0.125, 0.25, 0.5)))
