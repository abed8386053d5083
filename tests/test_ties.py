"""Ties break by index: among equal values the lower position is kept first, in every compressor
(docs/algorithms.md §2-3), so that a selection never depends on float noise or on the CPU.

Exact ties are built on purpose (equal magnitudes, scores equal in exact arithmetic) and the kept
positions are checked against what the rule dictates; random cases with many ties (values from a
small integer set) are checked against independent references: numpy's lexsort on
(-value, position), and exact rational arithmetic for SOFT's scores and normalised keys."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from fedlora_ray.compress import compressor, module_budget
from fedlora_ray.compress.base import fixed_order_sum_of_squares, largest, rank_component_positions
from fedlora_ray.compress.soft import allocate, rank_scores
from fedlora_ray.compress.soft import select as soft_select
from fedlora_ray.config import CompressionConfig

METHODS = ["soft", "flasc", "rlora", "hetlora", "fedlodrop"]


def _reference_top(values: np.ndarray, k: int) -> list[int]:
    """The rule written independently: sort by (NaN first, -value, position), keep k, ascending."""
    pos = np.arange(len(values))
    nan = np.isnan(values)
    key = np.where(nan, 0.0, -values)
    return sorted(np.lexsort((pos, key, ~nan))[:k].tolist())


def test_largest_keeps_the_lower_position_among_equal_values():
    v = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0, 2.0])
    assert largest(v, 2).tolist() == [1, 2]  # three 3s for two places: positions 1 and 2
    assert largest(v, 4).tolist() == [1, 2, 3, 4]  # the 2 at position 3 before the one at 5
    assert largest(v, 0).tolist() == [] and largest(v, 6).tolist() == list(range(6))
    assert largest(torch.zeros(5), 3).tolist() == [0, 1, 2]
    nan = float("nan")
    assert largest(torch.tensor([1.0, nan, 5.0, nan]), 1).tolist() == [1]  # NaN ranks first


def test_largest_matches_lexsort_on_many_ties():
    rng = np.random.default_rng(0)
    straddled = 0
    for case in range(400):
        n = int(rng.integers(1, 300))
        values = rng.integers(0, int(rng.choice([2, 3, 5, 10])), n).astype(np.float32)
        if case % 10 == 0:  # some infinities and NaNs (a diverged client)
            values[rng.integers(0, n, 3)] = rng.choice([np.inf, np.nan], 3)
        k = int(rng.integers(0, n + 1))
        got = largest(torch.from_numpy(values), k).tolist()
        assert got == _reference_top(values, k), (case, n, k)
        if 0 < k < n and not np.isnan(values).any():
            t = np.sort(values)[::-1][k - 1]  # the k-th largest
            straddled += int((values >= t).sum() > k)  # equal values on both sides of the cut
    assert straddled > 250  # most cases have equal values on both sides of the cut
    # a long vector: the equal values at the cut are gathered over several blocks of positions
    values = np.zeros(300_000, dtype=np.float32)
    values[rng.choice(300_000, 60, replace=False)] = 1.0
    values[rng.choice(300_000, 5, replace=False)] = 2.0
    for k in (5, 30, 64, 65, 1000):
        assert largest(torch.from_numpy(values), k).tolist() == _reference_top(values, k), k


def _update(seed: int, levels: int, shapes: dict[str, tuple[int, int, int]]):
    """Factors with entries from {-levels..levels}: many exactly equal magnitudes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, (d, r, k) in shapes.items():
        b = torch.randint(-levels, levels + 1, (d, r), generator=g).float()
        a = torch.randint(-levels, levels + 1, (r, k), generator=g).float()
        out[m] = (b, a)
    return out


def _flat(b: torch.Tensor, a: torch.Tensor) -> np.ndarray:
    return torch.cat([b.reshape(-1), a.reshape(-1)]).numpy()


def test_flasc_matches_the_reference_over_random_cases_with_ties():
    """Module scope and global scope (the modules concatenated in the update's order)."""
    rng = np.random.default_rng(1)
    for case in range(250):
        shapes = {
            m: (int(rng.integers(1, 30)), int(rng.integers(1, 9)), int(rng.integers(1, 30)))
            for m in ("q", "v")
        }
        update = _update(case, int(rng.choice([1, 2, 4])), shapes)
        rho = float(rng.uniform(0.01, 1.0))
        for scope in ("module", "global"):
            cfg = CompressionConfig(method="flasc", keep_ratio=rho, flasc_scope=scope)
            got = compressor("flasc").compress(update, update, cfg, torch.Generator()).payload
            vecs = {m: np.abs(_flat(*update[m])) for m in shapes}
            if scope == "module":
                for m, (d, r, k) in shapes.items():
                    want = _reference_top(vecs[m], module_budget(rho, d, k, r))
                    assert got[m].index.tolist() == want, (case, scope, m)  # type: ignore[union-attr]
            else:
                total = sum(module_budget(rho, d, k, r) for d, r, k in shapes.values())
                want = _reference_top(np.concatenate([vecs["q"], vecs["v"]]), total)
                n_q = len(vecs["q"])
                assert got["q"].index.tolist() == [p for p in want if p < n_q], case  # type: ignore[union-attr]
                assert got["v"].index.tolist() == [p - n_q for p in want if p >= n_q], case  # type: ignore[union-attr]


def test_soft_scores_equal_in_exact_arithmetic_are_bit_equal_and_break_by_rank():
    """||b_j||^2 ||a_j||^2 = 2 * 8, 4 * 4 and 8 * 2: all three scores are 4. Float32 norms give
    sqrt(2) sqrt(8) = 3.9999998 against 4, which would hand the tied extra entry to rank 1."""
    d = k = 4
    b, a = torch.zeros(d, 3), torch.zeros(3, k)
    b[:2, 0], a[0, :2] = 1.0, 2.0  # 2 and 8
    b[0, 1], a[1, 0] = 2.0, 2.0  # 4 and 4
    b[:2, 2], a[2, :2] = 2.0, 1.0  # 8 and 2
    f32 = torch.linalg.vector_norm(b, dim=0) * torch.linalg.vector_norm(a, dim=1)
    assert len(set(f32.tolist())) > 1  # the premise: float32 splits the tie
    scores = rank_scores(b, a)
    assert scores.dtype == torch.float64 and scores.tolist() == [4.0, 4.0, 4.0]
    assert allocate(scores, 7, d + k).tolist() == [3, 2, 2]  # the extra entry to rank 0
    assert allocate(scores, 8, d + k).tolist() == [3, 3, 2]


def test_soft_keeps_the_first_positions_of_each_rank_among_equal_keys():
    """Every entry of the update the same magnitude and every score equal: rank j keeps the first
    k_j positions of its component (column j of B top to bottom, then row j of A). d = k, so that
    the normalised keys of the two halves are equal as well."""
    d, r, k = 5, 3, 5
    ub = torch.ones(d, r)
    ub[::2] = -1.0  # the sign does not matter, the magnitude does
    ua = torch.ones(r, k)
    table = rank_component_positions(d, r, k)
    for selection in ("normalized", "raw"):
        for budget in (1, 7, 10, 13, 26):
            cfg = CompressionConfig(method="soft", soft_selection=selection)
            got = soft_select(ub, ua, budget, torch.ones(d, r), torch.ones(r, k), cfg, torch.Generator())
            per_rank = [budget // r + (j < budget % r) for j in range(r)]
            want = sorted(p for j in range(r) for p in table[j, : per_rank[j]].tolist())
            assert got.tolist() == want, (selection, budget)


def _exact_sq(x: torch.Tensor) -> list[int]:
    """Per row: the sum of squares in Python integers (the entries are integers)."""
    return [sum(int(v) ** 2 for v in row) for row in x.tolist()]


def test_soft_matches_exact_arithmetic_over_random_cases_with_ties():
    """Integer factors, so that the exact scores sqrt(X_b X_a) and normalised keys u^2 / X_half are
    known in integers and fractions: the float64 scores are exactly sqrt of the integer products
    (ties preserved bit for bit), and each rank keeps its k_j largest exact keys, the lower
    component position first on a tie."""
    rng = np.random.default_rng(2)
    tied_scores = tied_keys = 0
    for case in range(250):
        d, r, k = int(rng.integers(1, 16)), int(rng.integers(2, 9)), int(rng.integers(1, 16))
        levels = int(rng.choice([1, 1, 2, 3]))
        ub, ua = _update(2 * case, levels, {"m": (d, r, k)})["m"]  # the update
        lb, la = _update(2 * case + 1, levels, {"m": (d, r, k)})["m"]  # the local factors
        exact = [xb * xa for xb, xa in zip(_exact_sq(lb.t()), _exact_sq(la))]
        scores = rank_scores(lb, la)
        assert scores.tolist() == torch.tensor(exact, dtype=torch.float64).sqrt().tolist(), case
        tied_scores += len(set(exact)) < r
        budget = int(rng.integers(0, r * (d + k) + 1))
        per_rank = allocate(torch.tensor(exact, dtype=torch.float64).sqrt(), budget, d + k).tolist()
        table = rank_component_positions(d, r, k).tolist()
        for selection in ("normalized", "raw"):
            cfg = CompressionConfig(method="soft", soft_selection=selection)
            got = soft_select(ub, ua, budget, lb, la, cfg, torch.Generator()).tolist()
            want = []
            for j, (col, row) in enumerate(zip(ub.t().tolist(), ua.tolist())):
                xb, xa = sum(int(v) ** 2 for v in col), sum(int(v) ** 2 for v in row)
                if selection == "normalized":
                    keys = [Fraction(int(v) ** 2, xb) if xb else Fraction(0) for v in col]
                    keys += [Fraction(int(v) ** 2, xa) if xa else Fraction(0) for v in row]
                else:
                    keys = [Fraction(abs(int(v))) for v in col + row]
                tied_keys += len(set(keys)) < len(keys)
                ranked = sorted(range(d + k), key=lambda c: (-keys[c], c))
                want += [table[j][c] for c in ranked[: per_rank[j]]]
            assert got == sorted(want), (case, selection)
    assert tied_scores > 60 and tied_keys > 1500  # the cases do exercise ties (88 and 2595)


def test_factor_mode_breaks_ties_by_index_with_scores_from_what_is_sent():
    """``compression.target = factors`` through FedAvg's upload: integer local factors plus an
    integer error memory, so U = X + e is exact; SOFT's scores and keys both come from U
    (soft_score auto, docs/algorithms.md §2) and match exact arithmetic, ties by index; FLASC keeps
    numpy's lexsort top-k of |U|."""
    from fedlora_ray.algorithm.schemes.base import LocalUpdate
    from fedlora_ray.algorithm.schemes.fedavg import FedAvg
    from tests.conftest import tiny_config

    rng = np.random.default_rng(3)
    for case in range(60):
        d, r, k = int(rng.integers(1, 12)), 4, int(rng.integers(1, 12))  # the tiny config's rank
        rho = float(rng.uniform(0.05, 1.0))
        x = _update(3 * case, 1, {"m": (d, r, k)})
        e = _update(3 * case + 1, 1, {"m": (d, r, k)})
        ub, ua = x["m"][0] + e["m"][0], x["m"][1] + e["m"][1]
        budget = module_budget(rho, d, k, r)
        for method in ("soft", "flasc"):
            scheme = FedAvg(tiny_config(f"compression.method={method}", "compression.target=factors",
                                        f"compression.keep_ratio={rho}"))  # fmt: skip
            zero = {"m": (torch.zeros(d, r), torch.zeros(r, k))}
            sent, _ = scheme.upload(LocalUpdate(zero, x, None, None, {"error": e}, case))
            got = sent.payload["m"].index.tolist()  # type: ignore[union-attr]
            if method == "flasc":
                assert got == _reference_top(np.abs(_flat(ub, ua)), budget), case
                continue
            cols, rows = ub.t().tolist(), ua.tolist()
            exact = [sum(int(v) ** 2 for v in c) * sum(int(v) ** 2 for v in w) for c, w in zip(cols, rows)]
            per_rank = allocate(torch.tensor(exact, dtype=torch.float64).sqrt(), budget, d + k).tolist()
            table = rank_component_positions(d, r, k).tolist()
            want = []
            for j, (col, row) in enumerate(zip(cols, rows)):
                xb, xa = sum(int(v) ** 2 for v in col), sum(int(v) ** 2 for v in row)
                keys = [Fraction(int(v) ** 2, xb) if xb else Fraction(0) for v in col]
                keys += [Fraction(int(v) ** 2, xa) if xa else Fraction(0) for v in row]
                ranked = sorted(range(d + k), key=lambda c: (-keys[c], c))
                want += [table[j][c] for c in ranked[: per_rank[j]]]
            assert got == sorted(want), case


@pytest.mark.parametrize("method", METHODS)
def test_every_compressor_breaks_exact_ties_by_index(method):
    """An update whose entries all have one magnitude, with equal local factors: every choice is a
    tie. FLASC keeps the first K positions; SOFT rank j's first k_j component positions, the extra
    entries to the lowest ranks; HetLoRA the lowest ranks' components; FedLoDrop and RLoRA choose
    at random and never look at the values, so a tied update gets the same positions as a random
    one from the same generator."""
    d, r, k = 6, 4, 6  # d = k: the normalised keys of B's and A's halves are equal too
    ub, ua = torch.full((d, r), 0.5), torch.full((r, k), -0.5)
    local = {"m": (torch.ones(d, r), torch.ones(r, k))}
    rho = 0.3
    budget = module_budget(rho, d, k, r)
    cfg = CompressionConfig(method=method, keep_ratio=rho)
    got = compressor(method).compress({"m": (ub, ua)}, local, cfg, torch.Generator().manual_seed(5))
    idx = got.payload["m"].index.tolist()  # type: ignore[union-attr]
    table = rank_component_positions(d, r, k)
    if method == "flasc":
        assert idx == list(range(budget))
    elif method == "soft":
        per_rank = [budget // r + (j < budget % r) for j in range(r)]
        assert idx == sorted(p for j in range(r) for p in table[j, : per_rank[j]].tolist())
    elif method == "hetlora":
        assert idx == sorted(table.reshape(-1)[:budget].tolist())
    else:
        g = torch.Generator().manual_seed(99)
        other = {"m": (torch.randn(d, r, generator=g), torch.randn(r, k, generator=g))}
        again = compressor(method).compress(other, local, cfg, torch.Generator().manual_seed(5))
        assert idx == again.payload["m"].index.tolist()  # type: ignore[union-attr]


def test_sum_of_squares_is_exact_on_small_integers_and_close_otherwise():
    x = torch.randint(-1000, 1000, (7, 333), generator=torch.Generator().manual_seed(3)).float()
    assert fixed_order_sum_of_squares(x).tolist() == [float(v) for v in _exact_sq(x)]
    y = torch.randn(5, 1000, generator=torch.Generator().manual_seed(4))
    want = [float(sum(Fraction(v) ** 2 for v in row)) for row in y.double().tolist()]
    np.testing.assert_allclose(fixed_order_sum_of_squares(y).numpy(), want, rtol=1e-15)
    assert fixed_order_sum_of_squares(torch.zeros(2, 0)).tolist() == [0.0, 0.0]


# Selections on a fixed set of inputs, summarised in one digest. Sizes from 2 to 400: float32
# torch.linalg.vector_norm over a row of 5, 7, 10, 18, ... entries gave other bits under default
# than under avx2 (the reason SOFT's scores are summed in a fixed order). The inputs come from
# numpy: torch.randn itself gives other bits under default than under avx2.
_DIGEST = """
import hashlib, numpy as np, torch
from fedlora_ray.compress import flasc, soft
from fedlora_ray.config import CompressionConfig
rng, g, h = np.random.default_rng(0), torch.Generator(), hashlib.sha256()
draw = lambda scale, *shape: torch.from_numpy((scale * rng.standard_normal(shape)).astype(np.float32))
for case in range(60):
    d, r, k = (int(x) for x in rng.integers((2, 1, 2), (70, 17, 70) if case % 4 else (400, 17, 400)))
    ub, ua, lb, la = draw(1e-2, d, r), draw(1.0, r, k), draw(1e-2, d, r), draw(1.0, r, k)
    budget = int(rng.integers(1, r * (d + k)))
    h.update(ub.numpy().tobytes() + ua.numpy().tobytes() + lb.numpy().tobytes() + la.numpy().tobytes())
    h.update(soft.rank_scores(lb, la).numpy().tobytes())
    for sel in ("normalized", "raw"):
        cfg = CompressionConfig(method="soft", soft_selection=sel)
        h.update(soft.select(ub, ua, budget, lb, la, cfg, g).numpy().tobytes())
    h.update(flasc.select(ub, ua, budget, lb, la, CompressionConfig(method="flasc"), g).numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest())
"""


@pytest.mark.slow
def test_selections_are_the_same_under_every_cpu_capability():
    """SOFT's scores (to the bit) and SOFT's and FLASC's positions under ATEN_CPU_CAPABILITY =
    default (no SIMD), avx2 and the machine's best: one stands in for many CPUs."""
    from benchmarks.portability import CAPABILITIES, ROOT, child_env

    seen = {}
    for capability in CAPABILITIES:
        out = subprocess.run([sys.executable, "-c", _DIGEST], env=child_env(capability), cwd=ROOT,
                             capture_output=True, text=True, check=True)  # fmt: skip
        name, digest = out.stdout.split()
        seen[f"{capability} ({name})"] = digest
    assert len(set(seen.values())) == 1, seen
