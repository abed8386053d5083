"""The adaptive plan's solver as plain loops: the reference the fast solver is checked against.

This is the solver of docs/algorithms.md §7 [ours] written as directly as the description reads,
with no shortcut: every coordinate step, every gradient and every trial of an option is
recomputed from scratch (O(N^2.5) and more). It is slow (minutes at N = 1,000, hours beyond) and
is never used by a run. ``fedlora_ray.control.adaptive.solve`` does the same steps much faster;
tests/test_adaptive.py checks that its plans are feasible and that their objective is within a
stated tolerance of this solver's, and benchmarks/adaptive_solver.py times both.

Notation as in docs/algorithms.md §7: F(q, s) = rounds(q, s) * E[T](q, s), with sum_i q_i = K,
q_min <= q_i <= q_max and s_i from ``prob.options``. Arrays are in client order unless a function
says it works in ascending T.
"""

from __future__ import annotations

import math

import numpy as np

from fedlora_ray.control.adaptive import AdaptivePlan, AdaptiveProblem, alternate, expected_max

# A coordinate-descent sweep ends the descent when no q moved by more than this.
DESCENT_TOL = 1e-9
# The pair exchange stops when the best pair's gradient gap is below this share of F ...
EXCHANGE_GAP = 1e-9
# ... or when its best move gains less than this share of F.
EXCHANGE_GAIN = 1e-12
# The pair move searches its line on a grid of this many points, zoomed in four times.
GRID_POINTS = 65


def objective(prob: AdaptiveProblem, q: np.ndarray, s: np.ndarray) -> float:
    """F(q, s) = rounds(q, s) * E[max over participants of T_i(s_i)] (docs/algorithms.md §7)."""
    return float(prob.rounds(q, s) * expected_max(prob.times(s), q))


def q_descent(
    prob: AdaptiveProblem, times: np.ndarray, s: np.ndarray, q: np.ndarray, lam: float
) -> np.ndarray:
    """Coordinate descent on F + lam * sum_i q_i for fixed s, from ``q`` (docs/algorithms.md §7,
    step (a) [ours]).

    Clients are visited in ascending T, equal T in client order (a stable sort). Gauss-Seidel:
    each step sees the q already updated in this sweep, so the order of equals changes the
    result. In one q_i, with the others fixed, E[T] is affine, alpha + beta q_i, where
    S_i = prod_{l > i} (1 - q_l), A_i = sum_{j > i} T_j q_j S_j, H_i is the fold of the faster
    clients (H <- H (1 - q_j) + T_j q_j), alpha = A_i + S_i H_i and beta = S_i (T_i - H_i); and
    rounds is c + d_i / q_i with d_i = a1 p_i^2 G_i^2. So F + lam q_i = const + (c beta + lam) q_i
    + d_i alpha / q_i, whose minimum over [q_min, q_max] is sqrt(d_i alpha / (c beta + lam)),
    clipped (q_max when the slope c beta + lam is not positive). Sweeps repeat until no q moves
    by more than ``DESCENT_TOL`` (at most 1000)."""
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
            c = r_total - d[i] / qs[i]  # rounds without client i's term
            slope = c * beta + lam
            new = hi if slope <= 0 else min(hi, max(lo, math.sqrt(d[i] * alpha / slope)))
            r_total += d[i] / new - d[i] / qs[i]
            moved = max(moved, abs(new - qs[i]))
            qs[i] = new
            h = h * (1 - new) + t[i] * new
        if moved < DESCENT_TOL:
            break
    out = np.empty(n)
    out[order] = qs
    return out


def project(prob: AdaptiveProblem, q: np.ndarray) -> np.ndarray:
    """The point clip(q + delta, q_min, q_max) with sum = K, delta found by bisection [ours]."""
    lo, hi = -1.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.clip(q + mid, prob.q_min, prob.q_max).sum() > prob.k:
            hi = mid
        else:
            lo = mid
    return np.clip(q + 0.5 * (lo + hi), prob.q_min, prob.q_max)


def gradient(prob: AdaptiveProblem, times: np.ndarray, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """dF/dq_i = E[T] dR/dq_i + R dE/dq_i with dR/dq_i = -a1 p_i^2 G_i^2 / q_i^2 and
    dE/dq_i = S_i (T_i - H_i), H_i from a plain loop over the clients in ascending T
    (docs/algorithms.md §7's formula for E[max], differentiated)."""
    order = np.argsort(times, kind="stable")
    t, qs = times[order], q[order]
    miss = 1.0 - qs
    suffix = np.append(np.cumprod(miss[:0:-1])[::-1], 1.0)
    h = np.zeros_like(t)
    for i in range(1, len(t)):
        h[i] = h[i - 1] * miss[i - 1] + t[i - 1] * qs[i - 1]
    d_e = np.empty_like(t)
    d_e[order] = suffix * (t - h)
    d_r = -prob.a1 * prob.share**2 * prob.grad_sq / q**2
    return float(expected_max(times, q)) * d_r + float(prob.rounds(q, s)) * d_e


def pair_move(
    prob: AdaptiveProblem, times: np.ndarray, s: np.ndarray, q: np.ndarray, i: int, j: int
) -> tuple[float, float]:
    """The best shift delta of probability from client j to client i (sum q stays K) and F there
    [ours]. E[T] is bilinear in (q_i, q_j): four evaluations, at (q_i, q_j) in {0, 1}^2, give it
    on the whole line; rounds is c + d_i / q_i + d_j / q_j. The line is searched on a grid of
    ``GRID_POINTS`` points, zoomed in around the best point four times."""
    d = prob.a1 * prob.share**2 * prob.grad_sq
    corners = np.repeat(q[None, :], 4, axis=0)
    corners[:, i] = [0, 1, 0, 1]
    corners[:, j] = [0, 0, 1, 1]
    e00, e10, e01, e11 = expected_max(times, corners)
    lo = max(prob.q_min - q[i], q[j] - prob.q_max)
    hi = min(prob.q_max - q[i], q[j] - prob.q_min)
    base_r = float(prob.rounds(q, s)) - d[i] / q[i] - d[j] / q[j]
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
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


def exchange(prob: AdaptiveProblem, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Pairwise exchanges, SMO-like (docs/algorithms.md §7, step (a) [ours]): raise the client
    whose F falls fastest as its q rises (among those below q_max), lower the one whose F falls
    fastest as its q drops (among those above q_min), the lower client index on an equal
    gradient, by the best ``pair_move``; stop when their gradients differ by at most
    ``EXCHANGE_GAP`` F or the move gains less than ``EXCHANGE_GAIN`` F (at most 50 N steps).
    Sum q stays K."""
    times = prob.times(s)
    q = q.copy()
    value = objective(prob, q, s)
    for _ in range(50 * prob.n):
        g = gradient(prob, times, s, q)
        up = np.flatnonzero(q < prob.q_max - 1e-12)
        down = np.flatnonzero(q > prob.q_min + 1e-12)
        if not len(up) or not len(down):
            break
        i = int(up[np.argmin(g[up])])
        j = int(down[np.argmax(g[down])])
        if i == j or g[j] - g[i] <= EXCHANGE_GAP * max(abs(value), 1e-12):
            break
        delta, new = pair_move(prob, times, s, q, i, j)
        if not new < value * (1 - EXCHANGE_GAIN):
            break
        q[i] += delta
        q[j] -= delta
        value = new
    return q


def solve_q(prob: AdaptiveProblem, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """q given s (docs/algorithms.md §7, step (a) [ours]): bisection on the multiplier lam of
    ``q_descent`` (bracketed by growing it fourfold) until sum q is within 0.1% of K, then
    ``project`` onto sum q = K and ``exchange``."""
    times = prob.times(s)
    scale = max(objective(prob, q, s), 1e-12)
    lo_lam, hi_lam = -scale, scale
    q_lo = q_descent(prob, times, s, q, lo_lam)
    while q_lo.sum() < prob.k and lo_lam > -1e12 * scale:
        lo_lam *= 4
        q_lo = q_descent(prob, times, s, q_lo, lo_lam)
    q_hi = q_descent(prob, times, s, q, hi_lam)
    while q_hi.sum() > prob.k and hi_lam < 1e12 * scale:
        hi_lam *= 4
        q_hi = q_descent(prob, times, s, q_hi, hi_lam)
    best = q_lo
    for _ in range(200):
        mid = 0.5 * (lo_lam + hi_lam)
        best = q_descent(prob, times, s, best, mid)
        total = best.sum()
        if abs(total - prob.k) <= 1e-3 * prob.k:
            break
        if total > prob.k:
            lo_lam = mid
        else:
            hi_lam = mid
    return exchange(prob, s, project(prob, best))


def solve_s(prob: AdaptiveProblem, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """s given q (docs/algorithms.md §7, step (b) [ours]): each client in turn takes the option
    that gives the least F with the others as they stand (the first such option on a tie),
    each trial a full evaluation of F; repeat until no client changes (at most 50 passes)."""
    s = s.copy()
    options = np.asarray(prob.options, dtype=np.float64)
    for _ in range(50):
        changed = False
        for i in range(prob.n):
            trial = np.repeat(s[None, :], len(options), axis=0)
            trial[:, i] = options
            values = prob.rounds(q, trial) * expected_max(prob.times(trial), q)
            best = options[int(np.argmin(values))]
            if best != s[i]:
                s[i], changed = best, True
        if not changed:
            break
    return s


def solve(prob: AdaptiveProblem, tol: float = 1e-6, max_iterations: int = 100) -> AdaptivePlan:
    """The plan of docs/algorithms.md §7 [ours] from the plain steps: ``alternate`` (the same
    outer loop as the fast solver's) with ``solve_q`` and ``solve_s``."""
    return alternate(prob, solve_q, solve_s, lambda q, s: objective(prob, q, s), tol, max_iterations)
