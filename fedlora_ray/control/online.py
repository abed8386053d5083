"""The online stage's per-round problem [seed IV-C, (30)-(41)] and its two solvers.

With the selected clients' delays equalised (39), the round's upload delay is
D_t(rho) = rho * a_t with a_t = M(r) q / Bw * sum_{i in S_t} 1 / log2(1 + gamma_i), and the
drift-plus-penalty choice is  argmin_{rho in [rho_min, 1]}  V Phi(r, rho) + Q(t) D_t(rho).
Only the sparsification term of Phi depends on rho, so with s = V c_s r the objective is
s (1 - rho) / rho^2 + Q a rho: convex on (0, 1] (40), its derivative s (rho - 2) / rho^3 + Q a
increasing. The scalar solver bisects on that derivative; the cvxpy one substitutes u = 1 / rho,
giving the DCP problem  min s (u^2 - u) + Q a / u  over 1 <= u <= 1 / rho_min.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def solve_scalar(s: float, qa: float, rho_min: float, iters: int = 100) -> float:
    """argmin over [rho_min, 1] of s (1 - rho) / rho^2 + qa * rho, by bisection (ours)."""

    def slope(rho: float) -> float:
        return s * (rho - 2) / rho**3 + qa

    if slope(1.0) <= 0:
        return 1.0
    if slope(rho_min) >= 0:
        return rho_min
    lo, hi = rho_min, 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if slope(mid) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


@lru_cache(maxsize=8)
def _problem(rho_min: float) -> tuple[Any, Any, Any, Any]:
    import cvxpy as cp

    u = cp.Variable(pos=True)
    s = cp.Parameter(nonneg=True)
    qa = cp.Parameter(nonneg=True)
    objective = cp.Minimize(s * (cp.square(u) - u) + qa * cp.inv_pos(u))
    problem = cp.Problem(objective, [u >= 1, u <= 1 / rho_min])
    assert problem.is_dpp()  # parameters enter affinely: re-solves reuse the compiled problem
    return problem, u, s, qa


def solve_cvxpy(s: float, qa: float, rho_min: float) -> float:
    """The same problem as a parametrised cvxpy program, solved by Clarabel."""
    problem, u, s_par, qa_par = _problem(rho_min)
    s_par.value, qa_par.value = s, qa
    problem.solve(solver="CLARABEL")
    return float(min(1.0, max(rho_min, 1.0 / u.value)))


def objective(s: float, qa: float, rho: float) -> float:
    return s * (1 - rho) / rho**2 + qa * rho
