"""The round's pure parts: sampling, seeds, FedAvg of separate factors, covariance, scheduling."""

import numpy as np
import pytest
import torch

from fedlora_ray.algorithm.aggregate import aggregate_update, covariance_term
from fedlora_ray.algorithm.sampling import client_seed, sample_clients
from fedlora_ray.algorithm.schedule import balance
from fedlora_ray.lora.adapter import Adapter


def _adapter(gen, modules=("m0", "m1"), d=6, k=5, r=3, head=True):
    lora = {m: (torch.randn(d, r, generator=gen), torch.randn(r, k, generator=gen)) for m in modules}
    return Adapter(lora, {"weight": torch.randn(2, d, generator=gen)} if head else {})


def test_sampling_is_seeded_distinct_and_uniform():
    s = sample_clients(0, 3, 100, 10)
    assert len(set(s.tolist())) == 10 and list(s) == sorted(s)
    assert np.array_equal(s, sample_clients(0, 3, 100, 10))
    assert not np.array_equal(s, sample_clients(0, 4, 100, 10))
    counts = np.bincount(np.concatenate([sample_clients(1, t, 20, 5) for t in range(4000)]), minlength=20)
    assert counts.min() > 0.9 * 1000 and counts.max() < 1.1 * 1000  # 4000 rounds * 5/20 each


def test_client_seed_depends_on_seed_round_and_client():
    seeds = {client_seed(s, t, c) for s in range(3) for t in range(3) for c in range(3)}
    assert len(seeds) == 27
    assert client_seed(1, 2, 3) == client_seed(1, 2, 3)


def test_fedavg_averages_each_factor_separately_by_data_share():
    gen = torch.Generator().manual_seed(0)
    start = _adapter(gen)
    ups = [_adapter(gen) for _ in range(3)]
    # FedAvg's step with the data shares renormalised over the sampled set: 1/4, 1/4, 1/2
    update = aggregate_update(start, ups, [0.25, 0.25, 0.5])
    out = Adapter(
        {m: (b + update.lora[m][0], a + update.lora[m][1]) for m, (b, a) in start.lora.items()},
        {k: v + update.head[k] for k, v in start.head.items()},
    )
    for m in ups[0].lora:
        for f in (0, 1):
            expect = 0.25 * ups[0].lora[m][f] + 0.25 * ups[1].lora[m][f] + 0.5 * ups[2].lora[m][f]
            torch.testing.assert_close(out.lora[m][f], expect)
    torch.testing.assert_close(
        out.head["weight"],
        0.25 * ups[0].head["weight"] + 0.25 * ups[1].head["weight"] + 0.5 * ups[2].head["weight"],
    )  # noqa: E501


def test_covariance_matches_its_definition():
    gen = torch.Generator().manual_seed(1)
    ups = [_adapter(gen) for _ in range(4)]
    w = np.array([0.1, 0.2, 0.3, 0.4])
    expect = 0.0
    for m in ups[0].lora:
        prod = sum(wi * (u.lora[m][0].double() @ u.lora[m][1].double()) for wi, u in zip(w, ups))
        bbar = sum(wi * u.lora[m][0].double() for wi, u in zip(w, ups))
        abar = sum(wi * u.lora[m][1].double() for wi, u in zip(w, ups))
        expect += float(torch.linalg.matrix_norm(prod - bbar @ abar))
    assert covariance_term(ups, list(w * 7)) == pytest.approx(expect, rel=1e-10)
    assert expect > 0


def test_covariance_vanishes_when_clients_agree_or_share_one_factor():
    gen = torch.Generator().manual_seed(2)
    one = _adapter(gen)
    assert covariance_term([one, one.clone(), one.clone()], [1, 2, 3]) == pytest.approx(0, abs=1e-12)
    other = one.clone()  # differs in B only: sum p B_i A = (sum p B_i) A, no cross term
    for m in other.lora:
        other.lora[m][0].add_(1.0)
    assert covariance_term([one, other], [1, 1]) == pytest.approx(0, abs=1e-9)


def test_balance_spreads_work_and_keeps_every_item():
    work = [40, 38, 5, 5, 5, 5, 41, 2]
    bins = balance(work, 3)
    assert sorted(i for b in bins for i in b) == list(range(8))
    loads = sorted(sum(work[i] for i in b) for b in bins)
    assert loads[-1] - loads[0] <= max(work) // 2
    assert balance(work, 3) == bins
    assert balance([1, 1], 4)[2:] == [[], []]
