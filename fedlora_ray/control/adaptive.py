"""Adaptive federated LoRA with independent sampling: choose q_i and s_i to cut wall-clock time.

Whose is what (docs/algorithms.md §7): independent participation with probability q_i and the goal,
the least wall-clock time to convergence, are the paper's [paper: adaptive sampling, arXiv 2505.23555];
the objective, the round-time model, the solver and the way it is made fast are ours. Client i joins
each round with probability q_i and trains a sketch of ratio s_i. We minimise

    F(q, s) = rounds(q, s) * E[T](q, s)
    rounds  = a0 + a1 sum_i p_i^2 (1 - q_i) / q_i G_i^2 + a2 sum_i p_i (1 / s_i - 1) G_i^2
    E[T]    = E[max over participants of T_i(s_i)],  T_i(s) = tau_i (omega + (1 - omega) s) + s u_i

subject to sum_i q_i = K and q_min <= q_i <= q_max, s_i in a finite set of options. u_i is client
i's full upload with an average share Bw / K of the band at its mean SNR. For independent
Bernoulli participation the expected maximum is exact: sort T ascending, then
E[max] = sum_j T_(j) q_(j) prod_{l > j} (1 - q_(l)) (0 when nobody joins).

Solver [ours] (low complexity, alternating): (a) q given s: coordinate descent on F + lambda sum q,
where each coordinate has a closed form because E[T] is affine and rounds is c + d / q in one q_i;
an outer bisection on lambda meets sum q = K; pairwise exchanges (SMO-like) then close the
relaxation's duality gap. (b) s given q: each client tries its options in turn. Stop when F
changes by less than ``tol`` (relative). Two starts (all s at the largest option, all at the
smallest) and the better result is kept.

How it stays fast at large N [ours]: every step visits the clients in the same order and makes
the same kind of decision as the plain loops of the description above (kept in
``fedlora_ray.control.adaptive_reference``); only the work per visit shrinks. The plans agree
with the plain loops' within a stated tolerance on the objective (tests/test_adaptive.py), not to
the bit: the two sum in different orders, so a near-tie may go either way. N = 10,000 with
K = 100 takes about 25 s of one core instead of hours (benchmarks/adaptive_solver.py).

- E[max] is a fold of the monoid (P, W) over the clients sorted by T: client j is
  (1 - q_j, T_j q_j), left then right combine to (P_L P_R, W_L P_R + W_R), and E[max] is the W
  of the whole list. The shortcuts below are statements about this fold.
- (a) Coordinate descent: a sweep's backward sums are two numpy cumulative operations. A prefix
  of fast clients, those with prod_{l > i} (1 - q_l) so small that the forward sum cannot change
  their closed form in floating point, is one numpy expression; a run of at least 64 clients at
  a bound is assumed to stay there, checked in one go and cut at the first client that leaves.
  Only the other clients take a Python step.
- (a) Exchange: S, E[max], rounds and the four corners of a pair's move are kept in the sorted
  order (O(N) numpy a step, no sorting). The gradient's forward sums come from one cumulative
  sum: S_i H_i = sum_{j < i} T_j q_j S_j / (1 - q_i).
- (b) s step: the N x |options| (client, option) times sit in one array sorted once, an inactive
  slot being the identity (1, 0), in blocks that keep their suffix folds. A change of s_i is two
  point updates, the fold of the slots after any time two lookups, and a client's value at every
  option O(1). A block of clients is evaluated at once on the current state and the scan goes on
  after the first that changes, so the clients are visited, and decide, one by one in the loop's
  order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def expected_max(times: np.ndarray, q: np.ndarray) -> np.ndarray:
    """E[max_{i in S} T_i] for independent participation (0 for an empty S), over the last axis
    of clients; ``times`` and ``q`` broadcast against each other (batches of either). The formula
    is docs/algorithms.md §7's: sum_j T_(j) q_(j) prod_{l > j} (1 - q_(l)) in ascending T [ours].
    Equal T keep client order (a stable sort): the value does not depend on their order, but
    the rounding of the sum does, and numpy's default sort orders equals differently with its
    AVX-512, AVX2 and baseline kernels."""
    times, q = np.broadcast_arrays(times, q)
    order = np.argsort(times, axis=-1, kind="stable")
    t, qs = np.take_along_axis(times, order, -1), np.take_along_axis(q, order, -1)
    return _sorted_expected_max(t, qs)


def _sorted_expected_max(t: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """``expected_max`` for clients already in ascending T, over the last axis."""
    miss = 1.0 - qs
    # suffix[j] = prod_{l > j} (1 - q_l)
    suffix = np.concatenate([np.cumprod(miss[..., :0:-1], axis=-1)[..., ::-1], np.ones_like(qs[..., :1])], -1)
    return np.sum(t * qs * suffix, axis=-1)


@dataclass(frozen=True)
class AdaptiveProblem:
    share: np.ndarray  # p_i, data shares summing to 1
    grad_sq: np.ndarray  # G_i^2
    tau: np.ndarray  # compute time of a full (s = 1) local round, s
    upload: np.ndarray  # u_i: full upload time with an average band share at the mean SNR, s
    omega: float
    options: tuple[float, ...]  # allowed s
    k: float  # expected participants per round, sum_i q_i
    q_min: float
    q_max: float
    a0: float
    a1: float
    a2: float

    @property
    def n(self) -> int:
        return len(self.share)

    def times(self, s: np.ndarray) -> np.ndarray:
        return self.tau * (self.omega + (1 - self.omega) * s) + s * self.upload

    def rounds(self, q: np.ndarray, s: np.ndarray) -> np.ndarray:
        pg = self.share * self.grad_sq
        return (
            self.a0
            + self.a1 * np.sum(self.share * pg * (1 - q) / q, axis=-1)
            + self.a2 * np.sum(pg * (1 / s - 1), axis=-1)
        )

    def objective(self, q: np.ndarray, s: np.ndarray) -> float:
        return float(self.rounds(q, s) * expected_max(self.times(s), q))


@dataclass(frozen=True)
class AdaptivePlan:
    q: np.ndarray
    s: np.ndarray
    objective: float
    rounds: float
    expected_round_s: float
    iterations: int
    solve_seconds: float


# A run of clients at a bound at least this long is tried in one vectorised go; shorter runs
# cost less one by one.
_RUN_MIN = 64
# Below this many clients a sweep is plain Python loops.
_VECTOR_MIN = 64


def _descend(
    t: list[float], d: list[float], dq: list[float], suffix: list[float], after: list[float],
    h: float, r_total: float, lam: float, lo: float, hi: float, out: list[float],
) -> tuple[float, float]:  # fmt: skip
    """The coordinate steps of ``_q_descent`` for consecutive clients, one by one (appending the
    new q to ``out``); returns the forward sum h and rounds after them (docs/algorithms.md §7,
    step (a) [ours])."""
    sqrt = math.sqrt
    push = out.append
    for ti, di, dqi, si, ai in zip(t, d, dq, suffix, after):
        slope = (r_total - dqi) * (si * (ti - h)) + lam  # F + lam q_i = const + slope q_i + d alpha / q_i
        if slope <= 0:
            new = hi
        else:
            new = sqrt(di * (ai + si * h) / slope)
            if not new > lo:
                new = lo
            elif not new < hi:
                new = hi
        r_total += di / new - dqi
        push(new)
        h = h * (1 - new) + ti * new
    return h, r_total


def _suffix_products(miss: np.ndarray) -> np.ndarray:
    """prod_{l > j} miss_l for every j of a 1-d array (1 at the end): S_j of docs/algorithms.md §7
    when miss = 1 - q in ascending T."""
    out = np.ones(len(miss))
    out[:-1] = np.cumprod(miss[:0:-1])[::-1]
    return out


def _fold(miss: np.ndarray, w: np.ndarray) -> float:
    """h after h <- h miss_k + w_k over k in order from h = 0 (the W of the fold (P, W)),
    i.e. sum_k w_k prod_{l > k} miss_l [ours]."""
    return float(np.dot(w, _suffix_products(miss))) if len(w) else 0.0


def _q_descent_small(
    order: np.ndarray, t: list[float], d: list[float], qs: list[float], r_total: float, lam: float, lo: float,
    hi: float,
) -> np.ndarray:  # fmt: skip
    """``_q_descent`` for a few clients, where numpy's overhead would dominate (it halves the
    solve at N <= 40): plain loops (docs/algorithms.md §7, step (a) [ours])."""
    n = len(t)
    for _ in range(1000):
        suffix = [1.0] * n  # S_i
        after = [0.0] * n  # A_i
        for i in range(n - 2, -1, -1):
            suffix[i] = suffix[i + 1] * (1 - qs[i + 1])
            after[i] = after[i + 1] + t[i + 1] * qs[i + 1] * suffix[i + 1]
        new_q: list[float] = []
        _, r_total = _descend(
            t, d, [di / qi for di, qi in zip(d, qs)], suffix, after, 0.0, r_total, lam, lo, hi, new_q
        )
        moved = max(abs(a - b) for a, b in zip(new_q, qs))
        qs = new_q
        if moved < 1e-9:
            break
    out = np.empty(n)
    out[order] = qs
    return out


def _descend_tail(
    t: np.ndarray, d: np.ndarray, qs: np.ndarray, suffix: np.ndarray, after: np.ndarray, m: int, h: float,
    r_total: float, lam: float, lo: float, hi: float, new_q: np.ndarray,
) -> tuple[float, float]:  # fmt: skip
    """Clients m.. of a sweep of ``_q_descent`` in order, writing their new q into ``new_q``. A run
    of at least ``_RUN_MIN`` clients at a bound is assumed to stay there (r then does not move,
    and H folds linearly), checked in one go and cut at the first client that leaves [ours]."""
    n = len(t)
    at_bound = (qs[m:] == lo) | (qs[m:] == hi)
    edges = (
        np.flatnonzero(np.diff(np.concatenate(([False], at_bound, [False])).astype(np.int8))) + m
    ).tolist()
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= _RUN_MIN]
    out: list[float] = []

    def plain(a: int, b: int, h: float, r: float) -> tuple[float, float]:
        dq = d[a:b] / qs[a:b]
        t_l, d_l, dq_l, s_l, a_l = (c.tolist() for c in (t[a:b], d[a:b], dq, suffix[a:b], after[a:b]))
        return _descend(t_l, d_l, dq_l, s_l, a_l, h, r, lam, lo, hi, out)

    k = m
    for a, b in runs:
        if a > k:
            h, r_total = plain(k, a, h, r_total)
        bound = float(qs[a])
        stay = 1 - bound
        hs = [h] * (b - a + 1)  # H along the run if every client stays at the bound
        for j, w in enumerate((t[a:b] * bound).tolist()):
            hs[j + 1] = h = h * stay + w
        hr = np.array(hs[:-1])
        sfx = suffix[a:b]
        slope = (r_total - d[a:b] / qs[a:b]) * (sfx * (t[a:b] - hr)) + lam
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.sqrt(d[a:b] * (after[a:b] + sfx * hr) / slope)
        x = np.where(x > lo, x, lo)
        x = np.where(x < hi, x, hi)
        x = np.where(slope <= 0, hi, x)
        left = np.flatnonzero((x != bound) | (qs[a:b] != bound))  # a run may mix q_min and q_max
        kept = int(left[0]) if len(left) else b - a
        out.extend([bound] * kept)
        h, k = hs[kept], a + kept
        if k < b:  # from the first client that leaves, one by one
            h, r_total = plain(k, b, h, r_total)
            k = b
    if k < n:
        h, r_total = plain(k, n, h, r_total)
    new_q[m:] = out
    return h, r_total


def _q_descent(
    prob: AdaptiveProblem, times: np.ndarray, s: np.ndarray, q: np.ndarray, lam: float
) -> np.ndarray:
    """Coordinate descent on F + lam sum q for fixed s, from ``q`` (docs/algorithms.md §7, step (a)
    [ours]; ``adaptive_reference.q_descent`` is the plain loop). Clients are visited in
    ascending T, equal T in client order (a stable sort, as in the plain loop), which keeps
    every coordinate's affine E[T] = alpha + beta q_i O(1) to update: with
    S_i = prod_{l>i} (1 - q_l), A_i = sum_{j>i} T_j q_j S_j and H_i the forward sum over faster
    clients, alpha = A_i + S_i H_i and beta = S_i (T_i - H_i).

    The sweep is Gauss-Seidel in that order. Two kinds of client skip the Python step (the
    result is the plain step's up to rounding): (1) a prefix of fast clients whose S_i is so small that
    S_i H_i cannot change A_i in floating point and (r - d_i / q_i) beta cannot change lam, whatever
    H_i and r are (H_i <= max T; r moves by at most sum d / q_min): their closed form is
    sqrt(d_i A_i / lam), one numpy expression; (2) a run of clients at a bound: if they all stay
    there, r does not change and H follows a linear fold, so the whole run is checked at once
    and cut at the first client that leaves."""
    order = np.argsort(times, kind="stable")
    t = times[order]
    qs = q[order]
    d = (prob.a1 * prob.share**2 * prob.grad_sq)[order]
    r_total = float(prob.rounds(q, s))
    lo, hi, n = prob.q_min, prob.q_max, len(t)
    # bounds over a whole sweep: H <= max T (a convex combination; 1% for rounding), |T - H| too,
    # and |r - d_i / q_i| <= |r| + 3 sum d / q_min
    h_bound = 1.01 * float(t.max())
    c_bound = 1.01 * (abs(r_total) + 3.0 * float(np.abs(d).sum()) / lo)
    lam_room = abs(lam) * 2.0**-55  # below a quarter ulp of lam
    if n < _VECTOR_MIN:
        return _q_descent_small(order, t.tolist(), d.tolist(), qs.tolist(), r_total, lam, lo, hi)
    for _ in range(1000):
        miss = 1.0 - qs
        suffix = np.empty(n)  # S_i
        suffix[-1] = 1.0
        suffix[:-1] = np.cumprod(miss[:0:-1])[::-1]
        after = np.empty(n)  # A_i
        after[-1] = 0.0
        after[:-1] = np.cumsum(t[:0:-1] * qs[:0:-1] * suffix[:0:-1])[::-1]
        new_q = np.empty(n)
        # (1) the fast prefix: S_i H_i below half an ulp of A_i, (r - dq) beta below a quarter of lam's
        s_h = suffix * h_bound
        free = (s_h <= after * 2.0**-54) & (c_bound * s_h <= lam_room)
        m = n if free.all() else int(np.argmin(free))
        h = 0.0
        if m:
            old = qs[:m]
            if lam <= 0:
                head = np.full(m, hi)
            else:
                head = np.sqrt(d[:m] * after[:m] / lam)
                head = np.where(head > lo, head, lo)
                head = np.where(head < hi, head, hi)
            new_q[:m] = head
            r_total += float(np.sum(d[:m] / head - d[:m] / old))
            h = _fold(1 - head, t[:m] * head)
        # (2) the rest in order, with long runs at a bound tried whole
        h, r_total = _descend_tail(t, d, qs, suffix, after, m, h, r_total, lam, lo, hi, new_q)
        moved = float(np.max(np.abs(new_q - qs)))
        qs = new_q
        if moved < 1e-9:  # the exchange step polishes what is left
            break
    out = np.empty(n)
    out[order] = qs
    return out


def _solve_q(prob: AdaptiveProblem, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """q given s (docs/algorithms.md §7, step (a) [ours]): bisection on the multiplier until
    sum q is within 0.1% of K, then a shift onto sum q = K and pairwise exchanges, which finish
    the job."""
    times = prob.times(s)
    scale = max(prob.objective(q, s), 1e-12)

    def at(lam: float, start: np.ndarray) -> np.ndarray:
        return _q_descent(prob, times, s, start, lam)

    lo_lam, hi_lam = -scale, scale
    q_lo = at(lo_lam, q)
    while q_lo.sum() < prob.k and lo_lam > -1e12 * scale:
        lo_lam *= 4
        q_lo = at(lo_lam, q_lo)
    q_hi = at(hi_lam, q)
    while q_hi.sum() > prob.k and hi_lam < 1e12 * scale:
        hi_lam *= 4
        q_hi = at(hi_lam, q_hi)
    best = q_lo
    for _ in range(200):
        mid = 0.5 * (lo_lam + hi_lam)
        best = at(mid, best)
        total = best.sum()
        if abs(total - prob.k) <= 1e-3 * prob.k:
            break
        if total > prob.k:
            lo_lam = mid
        else:
            hi_lam = mid
    return _exchange(prob, s, _project(prob, best))


def _project(prob: AdaptiveProblem, q: np.ndarray) -> np.ndarray:
    """The point with sum q = K inside the bounds reached by moving all clients by one shift,
    found by bisection [ours]."""
    lo, hi = -1.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.clip(q + mid, prob.q_min, prob.q_max).sum() > prob.k:
            hi = mid
        else:
            lo = mid
    out = np.clip(q + 0.5 * (lo + hi), prob.q_min, prob.q_max)
    return out


_GRID = np.linspace(0.0, 1.0, 65)  # the pair move's grid, zoomed in four times


class _Exchange:
    """State of the pair exchange for fixed s, the clients kept in ascending T (positions)
    [ours]. S_i = prod_{l > i} (1 - q_l), the terms v_i = T_i q_i S_i of E[max] and the terms of
    rounds are kept up to date as pairs move, so that a step is O(N) numpy work with no sorting.

    The gradient is dF/dq_i = E dR/dq_i + R dE/dq_i, with dE/dq_i = S_i (T_i - H_i) and H_i the
    fold of the faster clients (H <- H (1 - q_j) + T_j q_j). Every term v_j of a faster client
    carries the factor 1 - q_i, so S_i H_i = sum_{j < i} v_j / (1 - q_i): one cumulative sum of
    positive terms, accurate to a few ulps times log N. Where q_i = 1 that is 0 / 0; then S_j = 0
    for every j below the highest such client z, and only H_z is folded directly."""

    def __init__(self, prob: AdaptiveProblem, s: np.ndarray, q: np.ndarray) -> None:
        self.prob = prob
        n = prob.n
        times = prob.times(s)
        self.order = np.argsort(times, kind="stable")
        self.rank = np.empty(n, dtype=np.int64)
        self.rank[self.order] = np.arange(n)
        self.t = times[self.order]
        self.d = prob.a1 * prob.share**2 * prob.grad_sq  # rounds = c + d_i / q_i in one q_i
        pg = prob.share * prob.grad_sq
        self.share_pg = prob.share * pg
        self.rounds_s = prob.a2 * np.sum(pg * (1 / s - 1), axis=-1)  # the s part of rounds, fixed here
        self.q = q.copy()
        self.r_terms = self.share_pg * (1 - self.q) / self.q
        self.qs = self.q[self.order]
        self.miss = 1.0 - self.qs
        self.w = self.t * self.qs
        self.suffix = _suffix_products(self.miss)
        self.v = self.w * self.suffix  # the terms of E[max]
        self.d_r = -self.d[self.order] / self.qs**2  # dR/dq_i, in ascending T
        self.up = self.qs < prob.q_max - 1e-12
        self.down = self.qs > prob.q_min + 1e-12

    def expected_max(self) -> float:
        return float(np.sum(self.v))

    def rounds(self) -> float:
        """prob.rounds(q, s) from its kept terms."""
        return float(self.prob.a0 + self.prob.a1 * np.sum(self.r_terms) + self.rounds_s)

    def gradient(self, e_max: float, r: float) -> np.ndarray:
        """dF/dq in ascending T, at E[max] = ``e_max`` and rounds = ``r``."""
        below = np.zeros(len(self.v))  # sum_{j < i} v_j
        np.cumsum(self.v[:-1], out=below[1:])
        miss = self.miss
        s_h = np.divide(below, miss, out=np.zeros_like(below), where=miss > 0.0)  # S_i H_i
        ones = np.flatnonzero(miss == 0.0)
        if len(ones):
            z = int(ones[-1])
            s_h[z] = self.suffix[z] * _fold(miss[:z], self.w[:z])
        return e_max * self.d_r + r * (self.suffix * self.t - s_h)

    def pair(self, value: float, e_max: float, r: float) -> tuple[int, int] | None:
        """The clients to raise (i) and lower (j), or None where the exchange stops: i has the
        least gradient among those below q_max, j the largest among those above q_min, and
        they must differ by more than 1e-9 F. On an equal gradient the lower client index wins,
        as in the plain loop (docs/algorithms.md §7 [ours]): the state is kept in ascending T,
        where the first of equals would be the faster client, so the choice is made in client
        order."""
        if not self.up.any() or not self.down.any():
            return None
        g = self.gradient(e_max, r)[self.rank]  # client order
        i = int(np.argmin(np.where(self.up[self.rank], g, np.inf)))
        j = int(np.argmax(np.where(self.down[self.rank], g, -np.inf)))
        if i == j or g[j] - g[i] <= 1e-9 * max(abs(value), 1e-12):
            return None
        return i, j

    def corners(self, i: int, j: int) -> np.ndarray:
        """expected_max at (q_i, q_j) = (0, 0), (1, 0), (0, 1), (1, 1); only the terms up to
        the slower of the two differ from E's."""
        ri, rj = int(self.rank[i]), int(self.rank[j])
        a, b = min(ri, rj), max(ri, rj)
        t, w, miss, suffix = self.t, self.w, self.miss, self.suffix
        rows = np.repeat(self.v[None, :], 4, axis=0)
        # the suffix products below b when q_b = 0 (then 1 - q_b = 1), down to a; below a when q_a = 0 too
        upper = np.cumprod(np.concatenate(([suffix[b], 1.0], miss[a + 1 : b][::-1])))  # positions b .. a
        lower = np.cumprod(np.concatenate(([upper[-1], 1.0], miss[1:a][::-1])))[: a + 1]  # positions a .. 0
        middle = w[a + 1 : b] * upper[-2:0:-1]
        bottom = w[:a] * lower[:0:-1]
        for row, (x, y) in enumerate(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))):
            qa, qb = (x, y) if ri < rj else (y, x)
            out = rows[row]
            out[b] = t[b] * qb * suffix[b]
            if qb == 1.0:
                out[:b] = 0.0
                continue
            out[a + 1 : b] = middle
            out[a] = t[a] * qa * upper[-1]
            out[:a] = 0.0 if qa == 1.0 else bottom
        return np.sum(rows, axis=-1)

    def move(self, i: int, j: int, delta: float) -> None:
        """q_i += delta and q_j -= delta; S and the terms of E and rounds follow."""
        ri, rj = int(self.rank[i]), int(self.rank[j])
        b = max(ri, rj)
        self.q[i] += delta
        self.q[j] -= delta
        q_max, q_min = self.prob.q_max, self.prob.q_min
        for c, r in ((i, ri), (j, rj)):
            qc = self.q[c]
            self.qs[r] = qc
            self.miss[r] = 1.0 - qc
            self.w[r] = self.t[r] * qc
            self.r_terms[c] = self.share_pg[c] * (1 - qc) / qc
            self.d_r[r] = -self.d[c] / (qc * qc)
            self.up[r] = qc < q_max - 1e-12
            self.down[r] = qc > q_min + 1e-12
        miss, suffix = self.miss, self.suffix
        # S changes only at and below b: multiplied on from S_b
        suffix[: b + 1] = np.cumprod(np.concatenate(([suffix[b]], miss[1 : b + 1][::-1])))[::-1]
        self.v[: b + 1] = self.w[: b + 1] * suffix[: b + 1]


def _pair_move(
    prob: AdaptiveProblem, q: np.ndarray, d: np.ndarray, i: int, j: int, corners: np.ndarray, r: float
) -> tuple[float, float]:
    """The best shift delta of probability from client j to client i (sum q stays K), and F
    there. E[T] is bilinear in (q_i, q_j), so four evaluations (``corners``: E at (q_i, q_j) =
    (0, 0), (1, 0), (0, 1), (1, 1)) give it exactly, and rounds (``r`` at q) is
    c + d_i / q_i + d_j / q_j (``d`` = a1 p^2 G^2): a fine grid, zoomed three times, costs little
    (docs/algorithms.md §7, step (a) [ours])."""
    d_i, d_j = d[i], d[j]
    e00, e10, e01, e11 = corners
    q_i, q_j = q[i], q[j]
    lo = max(prob.q_min - q_i, q_j - prob.q_max)
    hi = min(prob.q_max - q_i, q_j - prob.q_min)
    base_r = r - d_i / q_i - d_j / q_j
    a, b = lo, hi
    best, value = 0.0, np.inf
    for _zoom in range(4):
        delta = a + (b - a) * _GRID
        x, y = q_i + delta, q_j - delta
        not_x, not_y = 1 - x, 1 - y
        e = e00 * not_x * not_y + e10 * x * not_y + e01 * not_x * y + e11 * x * y
        f = (base_r + d_i / x + d_j / y) * e
        k = int(np.argmin(f))
        best, value = float(delta[k]), float(f[k])
        step = (b - a) / (len(_GRID) - 1)
        a, b = max(lo, best - step), min(hi, best + step)
    return best, value


def _exchange(prob: AdaptiveProblem, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Move probability between pairs of clients, keeping sum q = K, until no pair gains. Needed
    because the multiplier's relaxation has a duality gap: sum q(lambda) can jump past K (seen
    on N = 3). Each step takes the most violating pair (the client whose F falls fastest as q
    rises, and the one whose F falls fastest as q drops, as in SMO) and moves it to the best
    point on its line: O(N) numpy work a step (``_Exchange``), so large N stays cheap [ours]."""
    state = _Exchange(prob, s, q)
    value = prob.objective(q, s)
    for _ in range(50 * prob.n):
        e_max, r = state.expected_max(), state.rounds()
        found = state.pair(value, e_max, r)
        if found is None:
            break
        i, j = found
        delta, new = _pair_move(prob, state.q, state.d, i, j, state.corners(i, j), r)
        if not new < value * (1 - 1e-12):
            break
        state.move(i, j, delta)
        value = new
    return state.q


# The s step's values of one client at its options carry the folds' rounding, so options whose F
# is equal in exact arithmetic (a2 = 0 and T the same at every option, or a2 = 0 and a slower
# client at q = 1) come out a few ulps apart: at most 3.1e-16 relative seen at N = 100 to
# 5,000. Values within this share of the least count as equal, and the first option among them
# wins, as the plain loop's exact argmin would pick it [ours; docs/algorithms.md §7].
_OPTION_TIE_RTOL = 1e-13


def _first_best(values: np.ndarray) -> np.ndarray:
    """Per row of F values (clients x options), the first option within ``_OPTION_TIE_RTOL`` of
    the row's least [ours; docs/algorithms.md §7]."""
    least = values.min(axis=1, keepdims=True)
    return np.argmax(values <= least + _OPTION_TIE_RTOL * np.abs(least), axis=1)


class _SlotFolds:
    """The monoid (P, W) over all (client, option) slots sorted by time, an inactive slot being
    the identity (1, 0), cut into blocks of ``block`` slots. Each block keeps, for every slot,
    the fold of the slots after it inside the block; the blocks keep the fold of the blocks
    after them. The fold of everything after a position is then two lookups, and setting one
    slot redoes one block and the block suffixes: O(sqrt(slots)) numpy work [ours]."""

    def __init__(self, p: np.ndarray, w: np.ndarray) -> None:
        self.block = max(8, int(math.sqrt(len(p))))
        rows = -(-len(p) // self.block)
        p_pad, w_pad = np.ones(rows * self.block), np.zeros(rows * self.block)
        p_pad[: len(p)], w_pad[: len(w)] = p, w
        self.p, self.w = p_pad.reshape(rows, -1), w_pad.reshape(rows, -1)
        self.in_p = np.empty_like(self.p)  # fold of the slots after each slot, inside its block
        self.in_w = np.empty_like(self.w)
        self.in_p[:, -1], self.in_w[:, -1] = 1.0, 0.0
        self.in_p[:, :-1] = np.cumprod(self.p[:, :0:-1], axis=1)[:, ::-1]
        self.in_w[:, :-1] = np.cumsum((self.w[:, 1:] * self.in_p[:, 1:])[:, ::-1], axis=1)[:, ::-1]
        self.block_p = self.p[:, 0] * self.in_p[:, 0]
        self.block_w = self.w[:, 0] * self.in_p[:, 0] + self.in_w[:, 0]
        self._blocks_after()

    def _blocks_after(self) -> None:
        bp = self.block_p
        self.after_p = np.append(np.cumprod(bp[:0:-1])[::-1], 1.0)
        self.after_w = np.append(np.cumsum((self.block_w[1:] * self.after_p[1:])[::-1])[::-1], 0.0)
        self.total_w = float(self.block_w[0] * self.after_p[0] + self.after_w[0])

    def set(self, positions: tuple[int, ...], p: tuple[float, ...], w: tuple[float, ...]) -> None:
        rows = set()
        for pos, pv, wv in zip(positions, p, w):
            r, c = divmod(pos, self.block)
            self.p[r, c], self.w[r, c] = pv, wv
            rows.add(r)
        for r in rows:
            row_p, row_w, in_p, in_w = self.p[r], self.w[r], self.in_p[r], self.in_w[r]
            in_p[:-1] = np.cumprod(row_p[:0:-1])[::-1]
            in_w[:-1] = np.cumsum((row_w[1:] * in_p[1:])[::-1])[::-1]
            self.block_p[r] = row_p[0] * in_p[0]
            self.block_w[r] = row_w[0] * in_p[0] + in_w[0]
        self._blocks_after()

    def after(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, W) of the fold of the slots after each position."""
        r = positions // self.block
        in_p, in_w = self.in_p.ravel()[positions], self.in_w.ravel()[positions]
        bp = self.after_p[r]
        return in_p * bp, in_w * bp + self.after_w[r]


def _solve_s(prob: AdaptiveProblem, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """s given q: each client in turn takes its best option, until none changes
    (docs/algorithms.md §7, step (b) [ours]; ``adaptive_reference.solve_s`` is the plain loop).
    Clients are visited in index order; of equally good options (within ``_OPTION_TIE_RTOL``,
    the rounding of the folds) the first in ``prob.options`` wins, even over the current one, as
    in the plain loop.

    Client i at time x, the others fixed: E[max] = q_i (x P + W) + (1 - q_i) W_all, where (P, W)
    folds the others' slots after x and W_all all of them (ties do not matter: every slot after
    x has a time >= x). The slots after x include client i's own active slot c when x is before
    it; the fold without it is (P / (1 - q_i), (W - W_c P_c' - W_c') / (1 - q_i) + W_c') with
    (P_c', W_c') the fold after c, exact up to rounding while 1 - q_i >= 1/2. Clients with a
    larger q_i are taken out of the folds first instead. rounds changes by
    a2 p_i G_i^2 (1 / x - 1 / s_i). A block of clients is evaluated at once on the current state;
    every client before the first that changes (or that needs taking out) kept its option, so
    the clients are visited, and each decides on the state it sees, as in the plain one-by-one
    loop."""
    n = prob.n
    options = np.asarray(prob.options, dtype=np.float64)
    n_opt = len(options)
    slot_t = prob.tau[:, None] * (prob.omega + (1 - prob.omega) * options) + options * prob.upload[:, None]
    flat_rank = np.empty(n * n_opt, dtype=np.int64)
    flat_rank[np.argsort(slot_t.ravel(), kind="stable")] = np.arange(n * n_opt)
    rank = flat_rank.reshape(n, n_opt)  # position of each (client, option) slot in time order
    # the first option equal to each s_i is the active slot
    cur = np.argmax(s[:, None] == options[None, :], axis=1)
    if not np.all(options[cur] == s):
        raise ValueError("_solve_s: every s_i must be one of the options")
    miss = 1.0 - q
    active_w = slot_t[np.arange(n), cur] * q
    leaf_p, leaf_w = np.ones(n * n_opt), np.zeros(n * n_opt)
    leaf_p[rank[np.arange(n), cur]] = miss
    leaf_w[rank[np.arange(n), cur]] = active_w
    folds = _SlotFolds(leaf_p, leaf_w)
    pg = prob.share * prob.grad_sq
    term = pg[:, None] * (1 / options - 1)  # client i's share of sum p G^2 (1 / s - 1)
    base = prob.a0 + prob.a1 * float(np.sum(prob.share * pg * (1 - q) / q))
    needs_out = miss < 0.5
    cur_s = cur.copy()

    def values(idx: np.ndarray, left_out: bool, sum_s: float) -> np.ndarray:
        """F for each client of ``idx`` at each option (rows), on the current state."""
        pos = rank[idx]
        c = cur_s[idx]
        c_pos = rank[idx, c]
        qi, mi = q[idx], miss[idx]
        p_after, w_after = folds.after(pos.ravel())
        p_after, w_after = p_after.reshape(pos.shape), w_after.reshape(pos.shape)
        if left_out:  # the client's own slot is the identity already
            rest = mi * folds.total_w
        else:
            pc, wc = folds.after(c_pos)
            w_own = active_w[idx]
            rest = folds.total_w - w_own * pc - wc + mi * wc  # (1 - q_i) W_all of the others
            before = pos < c_pos[:, None]
            p_after = np.where(before, p_after / mi[:, None], p_after)
            own_w, own_p, rest_w = (w_own * pc)[:, None], mi[:, None], wc[:, None]
            w_after = np.where(before, (w_after - own_w - rest_w) / own_p + rest_w, w_after)
        e = qi[:, None] * (slot_t[idx] * p_after + w_after) + rest[:, None]
        r = base + prob.a2 * (sum_s - term[idx, c][:, None] + term[idx])
        return r * e

    def move(i: int, new: int, left_out: bool) -> None:
        old_pos, new_pos = int(rank[i, cur_s[i]]), int(rank[i, new])
        active_w[i] = slot_t[i, new] * q[i]
        if left_out:
            folds.set((new_pos,), (miss[i],), (active_w[i],))
        else:
            folds.set((old_pos, new_pos), (1.0, miss[i]), (0.0, active_w[i]))
        cur_s[i] = new

    for _ in range(50):
        changed = False
        sum_s = float(np.sum(term[np.arange(n), cur_s]))
        i, width = 0, 8
        while i < n:
            idx = np.arange(i, min(n, i + width))
            out = np.flatnonzero(needs_out[idx])
            stop = int(out[0]) if len(out) else len(idx)  # evaluated as they stand up to here
            if stop:
                best = _first_best(values(idx[:stop], False, sum_s))
                moving = np.flatnonzero(options[best] != options[cur_s[idx[:stop]]])
                if len(moving):
                    f = int(moving[0])
                    j = i + f
                    sum_s += float(term[j, best[f]] - term[j, cur_s[j]])
                    move(j, int(best[f]), False)
                    changed, i, width = True, j + 1, 8
                    continue
            i += stop
            if stop == len(idx):
                width = min(2 * width, 4096)
                continue
            # client i has q_i > 1/2: take its slot out, then choose
            folds.set((int(rank[i, cur_s[i]]),), (1.0,), (0.0,))
            best_i = int(_first_best(values(np.array([i]), True, sum_s))[0])
            if options[best_i] != options[cur_s[i]]:
                sum_s += float(term[i, best_i] - term[i, cur_s[i]])
                changed = True
            else:
                best_i = int(cur_s[i])
            move(i, best_i, True)
            i, width = i + 1, 8
        if not changed:
            break
    return options[cur_s]


Step = Callable[[AdaptiveProblem, np.ndarray, np.ndarray], np.ndarray]


def alternate(
    prob: AdaptiveProblem,
    q_step: Step,
    s_step: Step,
    objective: Callable[[np.ndarray, np.ndarray], float],
    tol: float = 1e-6,
    max_iterations: int = 100,
) -> AdaptivePlan:
    """The plan of docs/algorithms.md §7 [ours]: from two starts (every s at the largest option,
    then at the smallest; q = K / N clipped to the bounds), alternate ``q_step(prob, s, q)`` and
    ``s_step(prob, q, s)`` until F changes by at most ``tol`` relative (at most
    ``max_iterations`` alternations); keep the start with the lower F. The fast solver and the
    plain reference (``adaptive_reference``) differ only in their steps."""
    start_time = time.perf_counter()
    uniform_q = np.full(prob.n, prob.k / prob.n)
    best: tuple[float, np.ndarray, np.ndarray, int] | None = None
    for start in (max(prob.options), min(prob.options)):
        s = np.full(prob.n, float(start))
        q = np.clip(uniform_q, prob.q_min, prob.q_max)
        value, it = math.inf, 0
        while it < max_iterations:
            it += 1
            q = q_step(prob, s, q)
            s = s_step(prob, q, s)
            new = objective(q, s)
            done = abs(value - new) <= tol * abs(new)
            value = new
            if done:
                break
        if best is None or value < best[0]:
            best = (value, q, s, it)
    assert best is not None
    value, q, s, it = best
    return AdaptivePlan(
        q=q,
        s=s,
        objective=value,
        rounds=float(prob.rounds(q, s)),
        expected_round_s=float(expected_max(prob.times(s), q)),
        iterations=it,
        solve_seconds=time.perf_counter() - start_time,
    )


def solve(prob: AdaptiveProblem, tol: float = 1e-6, max_iterations: int = 100) -> AdaptivePlan:
    """The fast solver: ``alternate`` with the coordinate-descent-and-exchange q step and the
    slot-fold s step (docs/algorithms.md §7 [ours])."""
    return alternate(prob, _solve_q, _solve_s, prob.objective, tol, max_iterations)


def uniform_plan(prob: AdaptiveProblem, s: np.ndarray) -> AdaptivePlan:
    """The objective's terms at uniform q = K / N and the given s, for schemes that do not
    optimise (logged so that every run reports the same objective; docs/algorithms.md §7)."""
    q = np.full(prob.n, prob.k / prob.n)
    return AdaptivePlan(q, s, prob.objective(q, s), float(prob.rounds(q, s)),
                        float(expected_max(prob.times(s), q)), 0, 0.0)  # fmt: skip
