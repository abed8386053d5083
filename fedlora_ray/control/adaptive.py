"""Adaptive federated LoRA with independent sampling: choose q_i and s_i to cut wall-clock time.

[arXiv 2505.23555 gives the goal; the objective and solver are ours, docs/algorithms.md §7.] Client i joins
each round with probability q_i and trains a sketch of ratio s_i. We minimise

    F(q, s) = rounds(q, s) * E[T](q, s)
    rounds  = a0 + a1 sum_i p_i^2 (1 - q_i) / q_i G_i^2 + a2 sum_i p_i (1 / s_i - 1) G_i^2
    E[T]    = E[max over participants of T_i(s_i)],  T_i(s) = tau_i (omega + (1 - omega) s) + s u_i

subject to sum_i q_i = K and q_min <= q_i <= q_max, s_i in a finite set of options. u_i is client
i's full upload with an average share Bw / K of the band at its mean SNR. For independent
Bernoulli participation the expected maximum is exact: sort T ascending, then
E[max] = sum_j T_(j) q_(j) prod_{l > j} (1 - q_(l)) (0 when nobody joins).

Solver (low complexity, alternating): (a) q given s: coordinate descent on F + lambda sum q, where
each coordinate has a closed form because E[T] is affine and rounds is c + d / q in one q_i; an
outer bisection on lambda meets sum q = K; pairwise exchanges (SMO-like) then close the
relaxation's duality gap. (b) s given q: each client tries its options in turn.
Stop when F changes by less than ``tol`` (relative). Two starts (all s at the largest option, all
at the smallest) and the better result is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np


def expected_max(times: np.ndarray, q: np.ndarray) -> np.ndarray:
    """E[max_{i in S} T_i] for independent participation (0 for an empty S), over the last axis
    of clients; ``times`` and ``q`` broadcast against each other (batches of either)."""
    times, q = np.broadcast_arrays(times, q)
    order = np.argsort(times, axis=-1, kind="stable")
    t, qs = np.take_along_axis(times, order, -1), np.take_along_axis(q, order, -1)
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


def _q_descent(
    prob: AdaptiveProblem, times: np.ndarray, s: np.ndarray, q: np.ndarray, lam: float
) -> np.ndarray:
    """Coordinate descent on F + lam sum q for fixed s, from ``q``. Clients are visited in
    ascending T, which keeps every coordinate's affine E[T] = alpha + beta q_i O(1) to update:
    with S_i = prod_{l>i} (1 - q_l), A_i = sum_{j>i} T_j q_j S_j and H_i the forward sum over
    faster clients, alpha = A_i + S_i H_i and beta = S_i (T_i - H_i)."""
    order = np.argsort(times, kind="stable")
    t = times[order].tolist()
    qs = q[order].tolist()
    d = (prob.a1 * prob.share**2 * prob.grad_sq)[order].tolist()
    r_total = float(prob.rounds(q, s))
    lo, hi, n = prob.q_min, prob.q_max, len(t)
    for _ in range(1000):
        suffix = [1.0] * n  # S_i
        after = [0.0] * n  # A_i
        for i in range(n - 2, -1, -1):
            suffix[i] = suffix[i + 1] * (1 - qs[i + 1])
            after[i] = after[i + 1] + t[i + 1] * qs[i + 1] * suffix[i + 1]
        h, moved = 0.0, 0.0
        for i in range(n):
            alpha = after[i] + suffix[i] * h
            beta = suffix[i] * (t[i] - h)
            c = r_total - d[i] / qs[i]
            slope = c * beta + lam  # F + lam q_i = const + slope q_i + d alpha / q_i
            new = hi if slope <= 0 else min(hi, max(lo, math.sqrt(d[i] * alpha / slope)))
            r_total += d[i] / new - d[i] / qs[i]
            moved = max(moved, abs(new - qs[i]))
            qs[i] = new
            h = h * (1 - new) + t[i] * new
        if moved < 1e-9:  # the exchange step polishes what is left
            break
    out = np.empty(n)
    out[order] = qs
    return out


def _solve_q(prob: AdaptiveProblem, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """q given s: bisection on the multiplier until sum q is within 0.1% of K, then a shift onto
    sum q = K and pairwise exchanges, which finish the job exactly."""
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
    """The nearest point with sum q = K inside the bounds, moving all clients by one shift."""
    lo, hi = -1.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.clip(q + mid, prob.q_min, prob.q_max).sum() > prob.k:
            hi = mid
        else:
            lo = mid
    out = np.clip(q + 0.5 * (lo + hi), prob.q_min, prob.q_max)
    return out


def _gradient(prob: AdaptiveProblem, times: np.ndarray, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """dF/dq_i = E dR/dq_i + R dE/dq_i, with dE/dq_i = S_i (T_i - H_i) in ascending-T order (the
    same affine pieces as in ``_q_descent``), for all clients in O(N)."""
    order = np.argsort(times, kind="stable")
    t, qs = times[order], q[order]
    miss = 1.0 - qs
    suffix = np.append(np.cumprod(miss[:0:-1])[::-1], 1.0)  # S_i = prod_{l > i} (1 - q_l)
    h = np.zeros_like(t)  # H_i = sum_{j < i} T_j q_j prod_{j < l < i} (1 - q_l)
    for i in range(1, len(t)):
        h[i] = h[i - 1] * miss[i - 1] + t[i - 1] * qs[i - 1]
    d_e = np.empty_like(t)
    d_e[order] = suffix * (t - h)
    d_r = -prob.a1 * prob.share**2 * prob.grad_sq / q**2
    return float(expected_max(times, q)) * d_r + float(prob.rounds(q, s)) * d_e


def _pair_move(
    prob: AdaptiveProblem, times: np.ndarray, s: np.ndarray, q: np.ndarray, i: int, j: int
) -> tuple[float, float]:
    """The best shift delta of probability from client j to client i (sum q stays K), and F
    there. E[T] is bilinear in (q_i, q_j), so four evaluations give it exactly, and rounds is
    c + d_i / q_i + d_j / q_j: a fine grid, zoomed three times, costs little."""
    d = prob.a1 * prob.share**2 * prob.grad_sq
    corners = np.repeat(q[None, :], 4, axis=0)
    corners[:, i] = [0, 1, 0, 1]
    corners[:, j] = [0, 0, 1, 1]
    e00, e10, e01, e11 = expected_max(times, corners)
    lo = max(prob.q_min - q[i], q[j] - prob.q_max)
    hi = min(prob.q_max - q[i], q[j] - prob.q_min)
    base_r = float(prob.rounds(q, s)) - d[i] / q[i] - d[j] / q[j]
    grid = np.linspace(0.0, 1.0, 65)
    a, b = lo, hi
    best, value = 0.0, np.inf
    for _zoom in range(4):
        delta = a + (b - a) * grid
        x, y = q[i] + delta, q[j] - delta
        e = e00 * (1 - x) * (1 - y) + e10 * x * (1 - y) + e01 * (1 - x) * y + e11 * x * y
        f = (base_r + d[i] / x + d[j] / y) * e
        k = int(np.argmin(f))
        best, value = float(delta[k]), float(f[k])
        step = (b - a) / (len(grid) - 1)
        a, b = max(lo, best - step), min(hi, best + step)
    return best, value


def _exchange(prob: AdaptiveProblem, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Move probability between pairs of clients, keeping sum q = K, until no pair gains. Needed
    because the multiplier's relaxation has a duality gap: sum q(lambda) can jump past K (seen
    on N = 3). Each step takes the most violating pair (the client whose F falls fastest as q
    rises, and the one whose F falls fastest as q drops, as in SMO) and moves it to the best
    point on its line: O(N) a step, so large N stays cheap."""
    times = prob.times(s)
    q = q.copy()
    value = prob.objective(q, s)
    for _ in range(50 * prob.n):
        g = _gradient(prob, times, s, q)
        up = np.flatnonzero(q < prob.q_max - 1e-12)
        down = np.flatnonzero(q > prob.q_min + 1e-12)
        if not len(up) or not len(down):
            break
        i = int(up[np.argmin(g[up])])
        j = int(down[np.argmax(g[down])])
        if i == j or g[j] - g[i] <= 1e-9 * max(abs(value), 1e-12):
            break
        delta, new = _pair_move(prob, times, s, q, i, j)
        if not new < value * (1 - 1e-12):
            break
        q[i] += delta
        q[j] -= delta
        value = new
    return q


def _solve_s(prob: AdaptiveProblem, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """s given q: each client in turn takes its best option, until none changes."""
    s = s.copy()
    options = np.asarray(prob.options, dtype=np.float64)
    for _ in range(50):
        changed = False
        for i in range(prob.n):
            trial = np.repeat(s[None, :], len(options), axis=0)
            trial[:, i] = options
            values = prob.rounds(q, trial) * expected_max(prob.times(trial), q)  # all options at once
            best = options[int(np.argmin(values))]
            if best != s[i]:
                s[i], changed = best, True
        if not changed:
            break
    return s


def solve(prob: AdaptiveProblem, tol: float = 1e-6, max_iterations: int = 100) -> AdaptivePlan:
    """Alternate the q and s steps from two starts; keep the better plan."""
    start_time = time.perf_counter()
    uniform_q = np.full(prob.n, prob.k / prob.n)
    best: tuple[float, np.ndarray, np.ndarray, int] | None = None
    for start in (max(prob.options), min(prob.options)):
        s = np.full(prob.n, float(start))
        q = np.clip(uniform_q, prob.q_min, prob.q_max)
        value, it = math.inf, 0
        while it < max_iterations:
            it += 1
            q = _solve_q(prob, s, q)
            s = _solve_s(prob, q, s)
            new = prob.objective(q, s)
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


def uniform_plan(prob: AdaptiveProblem, s: np.ndarray) -> AdaptivePlan:
    """The objective's terms at uniform q = K / N and the given s, for schemes that do not
    optimise (logged so that every run reports the same objective)."""
    q = np.full(prob.n, prob.k / prob.n)
    return AdaptivePlan(q, s, prob.objective(q, s), float(prob.rounds(q, s)),
                        float(expected_max(prob.times(s), q)), 0, 0.0)  # fmt: skip
