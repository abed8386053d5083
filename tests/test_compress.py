"""Compressors: exact budgets, SOFT's allocation and scores, error feedback, baseline patterns."""

import math

import pytest
import torch

from fedlora_ray.compress import apply_payload, compensate, compressor, module_budget, residual
from fedlora_ray.compress.base import dense_update, payload_bits
from fedlora_ray.compress.soft import allocate, rank_scores
from fedlora_ray.config import CompressionConfig
from fedlora_ray.lora.adapter import Adapter

METHODS = ["soft", "flasc", "rlora", "hetlora", "fedlodrop"]
SHAPES = {"q": (24, 4, 18), "v": (10, 6, 30)}  # module -> (d, r, k)


def _factors(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {
        m: (scale * torch.randn(d, r, generator=g), scale * torch.randn(r, k, generator=g))
        for m, (d, r, k) in SHAPES.items()
    }  # noqa: E501


def compress_update(update, local, cfg: CompressionConfig, gen: torch.Generator):  # type: ignore[no-untyped-def]
    """What FedAvg's upload does with the compensated update: the configured method's compress."""
    return compressor(cfg.method).compress(update, local, cfg, gen)


def _compress(method, rho, seed=0, **kw):
    cfg = CompressionConfig(method=method, keep_ratio=rho, **kw)
    return compress_update(_factors(seed), _factors(seed + 100), cfg, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rho", [0.03, 0.1, 0.37, 1.0])
@pytest.mark.parametrize("method", METHODS)
def test_each_method_keeps_exactly_its_budget(method, rho):
    out = _compress(method, rho)
    for m, (d, r, k) in SHAPES.items():
        budget = module_budget(rho, d, k, r)
        idx = out.payload[m].index
        assert idx is not None and len(torch.unique(idx)) == len(idx)  # distinct positions
        expect = (budget // (d + k)) * (d + k) if method == "fedlodrop" else budget
        assert len(idx) == expect, (m, len(idx), expect)
    assert out.kept == sum(len(p.index) for p in out.payload.values())  # type: ignore[arg-type]


def test_module_budget_is_rho_times_entries():
    assert module_budget(0.1, 384, 384, 8) == round(0.1 * 8 * 768) == 614
    assert module_budget(1.0, 5, 7, 3) == 36


def test_flasc_global_keeps_the_summed_budget_and_the_largest_entries():
    out = _compress("flasc", 0.2, flasc_scope="global")
    total = sum(module_budget(0.2, d, k, r) for d, r, k in SHAPES.values())
    assert out.kept == total
    u = _factors(0)
    sent = torch.cat(
        [torch.cat([u[m][0].reshape(-1), u[m][1].reshape(-1)])[out.payload[m].index].abs() for m in u]
    )
    rest = torch.cat([torch.cat([u[m][0].reshape(-1), u[m][1].reshape(-1)]).abs() for m in u])
    assert sent.min() >= rest.sort(descending=True).values[total - 1] - 1e-7


def test_flasc_module_keeps_the_largest_magnitudes_of_each_module():
    out, u = _compress("flasc", 0.25), _factors(0)
    for m in SHAPES:
        vec = torch.cat([u[m][0].reshape(-1), u[m][1].reshape(-1)]).abs()
        kept = torch.zeros_like(vec, dtype=torch.bool)
        kept[out.payload[m].index] = True
        assert vec[kept].min() >= vec[~kept].max()


def test_none_sends_everything_densely():
    out = _compress("none", 0.1)
    assert out.distortion == 0 and all(p.index is None for p in out.payload.values())
    assert out.bits == 32 * sum(r * (d + k) for d, r, k in SHAPES.values())


def test_bits_count_values_and_positions_or_a_bitmap():
    assert payload_bits(10, 1000, 32, dense=False) == 10 * (32 + math.ceil(math.log2(1000)))
    assert payload_bits(900, 1000, 32, dense=False) == 900 * 32 + 1000  # bitmap is cheaper
    out = _compress("soft", 0.1)
    expect = sum(
        payload_bits(len(out.payload[m].index), r * (d + k), 32, dense=False)  # type: ignore[arg-type]
        for m, (d, r, k) in SHAPES.items()
    )
    assert out.bits == expect


def test_soft_allocation_is_proportional_to_the_scores():
    scores = torch.tensor([5.0, 3.0, 1.5, 0.5])
    k = allocate(scores, 100, cap=1000)
    assert int(k.sum()) == 100
    exact = 100 * scores / scores.sum()
    assert torch.all((k - exact).abs() < 1)
    # the SOFT selector hands each rank exactly allocate()'s share of the module budget
    u, local = _factors(3), _factors(4)
    cfg = CompressionConfig(method="soft", keep_ratio=0.3)
    out = compress_update(u, local, cfg, torch.Generator())
    for m, (d, r, k_) in SHAPES.items():
        idx = out.payload[m].index
        b_mask = idx < d * r
        rank_of = torch.where(b_mask, idx % r, (idx - d * r) // k_)
        per_rank = torch.bincount(rank_of, minlength=r)
        expect = allocate(rank_scores(*local[m]), module_budget(0.3, d, k_, r), d + k_)
        assert torch.equal(per_rank, expect)


def test_soft_allocation_water_fills_a_capped_rank():
    # docs/algorithms.md §2: the rest of the budget stays proportional among uncapped ranks
    assert allocate(torch.tensor([10.0, 1.0, 1.0]), 20, cap=10).tolist() == [10, 5, 5]
    # 15 left over [3, 2, 1]: 7.5, 5, 2.5; the one extra unit goes to the higher score
    assert allocate(torch.tensor([100.0, 3.0, 2.0, 1.0]), 25, cap=10).tolist() == [10, 8, 5, 2]


def test_soft_allocation_with_two_capped_ranks():
    # lambda = 26 / 93 puts ranks 0 and 1 over the cap; the 6 left split 2 : 1
    assert allocate(torch.tensor([50.0, 40.0, 2.0, 1.0]), 26, cap=10).tolist() == [10, 10, 4, 2]
    # rank 1 binds only once rank 0 is capped: lambda = 1 leaves 6 under the cap, then the
    # 20 left over [6, 2, 2] give lambda = 2 and 12 > 10; the last 10 split evenly
    assert allocate(torch.tensor([20.0, 6.0, 2.0, 2.0]), 30, cap=10).tolist() == [10, 10, 5, 5]


def test_soft_allocation_without_signal_spreads_evenly():
    assert allocate(torch.zeros(3), 7, cap=10).tolist() == [3, 2, 2]
    assert allocate(torch.tensor([1.0, float("nan"), 2.0]), 6, cap=10).tolist() == [2, 2, 2]
    # zero-score ranks get nothing until every scored rank is full, then share the rest
    assert allocate(torch.tensor([3.0, 0.0, 1.0]), 8, cap=10).tolist() == [6, 0, 2]
    assert allocate(torch.tensor([1.0, 0.0, 0.0]), 20, cap=10).tolist() == [10, 5, 5]
    with pytest.raises(ValueError):
        allocate(torch.ones(2), 21, cap=10)


def _floor_largest_remainder(scores: torch.Tensor, total: int) -> torch.Tensor:
    """The proportional rule of eq. (9) as first implemented (no cap): floor of total s / sum(s)
    plus largest remainder, ties to the higher score then the lower index."""
    r = scores.numel()
    s = scores.double().clamp_min(0)
    s = s if float(s.sum()) > 0 else torch.ones(r, dtype=torch.float64)
    share = total * s / s.sum()
    k = share.floor().long()
    order = sorted(range(r), key=lambda j: (-float(share[j] - k[j]), -float(s[j]), j))
    for j in order[: total - int(k.sum())]:
        k[j] += 1
    return k


def _water_level(s: list[float], total: int, cap: int) -> float:
    """lambda with sum_j min(cap, lambda s_j) = total, by bisection (independent of the code)."""
    lo, hi = 0.0, 1.0
    while sum(min(cap, hi * x) for x in s) < total:
        hi *= 2
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sum(min(cap, mid * x) for x in s) < total else (lo, mid)
    return hi


def _random_case(g: torch.Generator) -> tuple[torch.Tensor, int, int]:
    r = int(torch.randint(1, 17, (1,), generator=g))
    cap = int(torch.randint(1, 60, (1,), generator=g))
    kind = int(torch.randint(0, 3, (1,), generator=g))
    if kind == 0:  # small integers: many ties and zeros
        scores = torch.randint(0, 5, (r,), generator=g).float()
    elif kind == 1:  # heavy-tailed, so that caps often bind
        scores = torch.exp(2 * torch.randn(r, generator=g))
    else:
        scores = torch.rand(r, generator=g)
    total = int(torch.randint(0, r * cap + 1, (1,), generator=g))
    return scores, total, cap


def test_soft_allocation_sums_to_the_budget_and_respects_the_cap():
    g = torch.Generator().manual_seed(7)
    binding = 0
    for _ in range(1500):
        scores, total, cap = _random_case(g)
        k = allocate(scores, total, cap)
        assert k.dtype == torch.long and int(k.sum()) == total, (scores, total, cap, k)
        assert int(k.min()) >= 0 and int(k.max()) <= cap, (scores, total, cap, k)
        s = scores.double().tolist()
        if sum(s) > 0 and sum(x > 0 for x in s) * cap >= total:
            lam = _water_level(s, total, cap)
            x = [min(cap, lam * v) for v in s]
            binding += any(v >= cap for v in x)
            assert all(abs(kj - xj) < 1 + 1e-9 for kj, xj in zip(k.tolist(), x)), (s, total, cap)
    assert binding > 300  # the cases exercise the cap


def test_soft_allocation_without_a_binding_cap_is_floor_plus_largest_remainder():
    g = torch.Generator().manual_seed(11)
    checked = 0
    for _ in range(3000):
        scores, total, cap = _random_case(g)
        s = scores.double().clamp_min(0)
        s = s if float(s.sum()) > 0 else torch.ones_like(s)
        if float((total * s / s.sum()).max()) > cap:
            continue
        checked += 1
        assert torch.equal(allocate(scores, total, cap), _floor_largest_remainder(scores, total))
    assert checked > 500


def test_soft_scores_are_the_singular_values_when_factors_are_orthogonal():
    g = torch.Generator().manual_seed(0)
    d, k, r = 40, 30, 6
    u, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(k, r, generator=g, dtype=torch.float64))
    sb = torch.tensor([3.0, 0.5, 2.0, 1.0, 0.1, 4.0], dtype=torch.float64)
    sa = torch.tensor([0.2, 2.0, 1.0, 0.7, 3.0, 0.25], dtype=torch.float64)
    b, a = u * sb, (v * sa).t()  # orthogonal columns of B, orthogonal rows of A, unequal scales
    singular = torch.linalg.svdvals(b @ a)[:r]  # rank r: the rest are zero
    torch.testing.assert_close(rank_scores(b, a).sort(descending=True).values, singular)


def test_soft_within_rank_takes_the_largest_normalised_entries():
    d, r, k = 8, 2, 6
    ub = torch.zeros(d, r)
    ua = torch.zeros(r, k)
    ub[:, 0] = torch.arange(1.0, d + 1)  # B's column 0: entries up to 8, norm ~14.3
    ua[0] = 0.01 * torch.arange(1.0, k + 1)  # A's row 0: tiny raw values, but large once normalised
    local_b, local_a = torch.ones(d, r), torch.ones(r, k)
    local_b[:, 1] = 0.0  # rank 1 scores zero: the whole budget goes to rank 0
    normalised = compress_update(
        {"m": (ub, ua)},
        {"m": (local_b, local_a)},
        CompressionConfig(method="soft", keep_ratio=4 / (r * (d + k))),
        torch.Generator(),
    )  # noqa: E501
    raw = compress_update(
        {"m": (ub, ua)},
        {"m": (local_b, local_a)},
        CompressionConfig(method="soft", keep_ratio=4 / (r * (d + k)), soft_selection="raw"),
        torch.Generator(),
    )  # noqa: E501
    a_pos = {d * r + k - 1, d * r + k - 2}  # A[0, 5], A[0, 4]: 0.42 and 0.35 of their row's norm
    assert a_pos <= set(normalised.payload["m"].index.tolist())  # type: ignore[union-attr]
    assert not a_pos & set(raw.payload["m"].index.tolist())  # type: ignore[union-attr]


def test_hetlora_keeps_the_lowest_rank_indices_first():
    d, r, k = 5, 4, 3
    for budget in (4, 8, 13):
        out = compress_update(
            {"m": (torch.randn(d, r), torch.randn(r, k))}, {"m": (torch.randn(d, r), torch.randn(r, k))},
            CompressionConfig(method="hetlora", keep_ratio=budget / (r * (d + k))), torch.Generator(),
        )  # fmt: skip
        idx = out.payload["m"].index
        rank_of = torch.where(idx < d * r, idx % r, (idx - d * r) // k)  # type: ignore[operator]
        full = budget // (d + k)
        assert torch.equal(torch.bincount(rank_of, minlength=r)[:full], torch.full((full,), d + k))
        assert int(rank_of.max()) == (budget - 1) // (d + k)  # nothing beyond the rank the budget reaches


def test_fedlodrop_keeps_whole_components_with_the_same_index_in_b_and_a():
    d, r, k = 7, 6, 5
    seen = set()
    for seed in range(30):
        out = compress_update(
            {"m": (torch.randn(d, r), torch.randn(r, k))}, {"m": (torch.randn(d, r), torch.randn(r, k))},
            CompressionConfig(method="fedlodrop", keep_ratio=0.55), torch.Generator().manual_seed(seed),
        )  # fmt: skip
        idx = out.payload["m"].index
        b_ranks = set((idx[idx < d * r] % r).tolist())  # type: ignore[index]
        a_ranks = set(((idx[idx >= d * r] - d * r) // k).tolist())  # type: ignore[index]
        assert b_ranks == a_ranks and len(b_ranks) == int(0.55 * r * (d + k)) // (d + k) == 3
        assert len(idx) == 3 * (d + k)  # type: ignore[arg-type]
        seen |= b_ranks
    assert seen == set(range(r))  # chosen at random, every component gets its turn


def test_rlora_is_uniform_over_positions():
    counts = torch.zeros(24 * 4 + 4 * 18)
    for seed in range(400):
        out = _compress("rlora", 0.25, seed=seed)
        counts[out.payload["q"].index] += 1
    expect = 400 * module_budget(0.25, 24, 18, 4) / counts.numel()
    assert counts.min() > 0.6 * expect and counts.max() < 1.4 * expect


@pytest.mark.parametrize("method", METHODS)
def test_error_feedback_conserves_the_update(method):
    """sent + new residual = local update + old residual, entry for entry."""
    delta, old = _factors(1), _factors(2, scale=0.1)
    update = compensate(delta, old)
    sent = compress_update(
        update, _factors(3), CompressionConfig(method=method, keep_ratio=0.2), torch.Generator()
    )
    new = residual(update, sent)
    for m, (b, a) in delta.items():
        cb, ca = dense_update(sent.payload[m], b.shape, a.shape)
        torch.testing.assert_close(cb + new[m][0], b + old[m][0])
        torch.testing.assert_close(ca + new[m][1], a + old[m][1])
        assert torch.count_nonzero(cb * new[m][0]) == 0  # an entry is either sent or kept back
    assert sent.distortion == pytest.approx(
        sum(float(b.square().sum() + a.square().sum()) for b, a in new.values())
        / sum(float(b.square().sum() + a.square().sum()) for b, a in update.values())
    )


def test_untransmitted_entries_keep_the_global_value():
    glob = Adapter(_factors(5), {})
    sent = compress_update(
        _factors(6), _factors(7), CompressionConfig(method="rlora", keep_ratio=0.1), torch.Generator()
    )
    got = apply_payload(glob, sent.payload, {})
    for m, (b, a) in glob.lora.items():
        vec_g = torch.cat([b.reshape(-1), a.reshape(-1)])
        vec = torch.cat([got.lora[m][0].reshape(-1), got.lora[m][1].reshape(-1)])
        changed = torch.nonzero(vec != vec_g).flatten()
        assert set(changed.tolist()) <= set(sent.payload[m].index.tolist())  # type: ignore[union-attr]
        assert len(changed) > 0
