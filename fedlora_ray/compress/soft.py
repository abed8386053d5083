"""SOFT: sparsified orthogonal fine-tuning [paper III-A/B, eqs. (8)-(9); docs/algorithms.md §2].

With near-orthogonal factors, s_j = ||b_j|| * ||a_j|| stands in for the j-th singular value of
B A at O(r(d+k)) cost, no product and no SVD. The module's budget K_m is shared among ranks in
proportion to s_j, and within rank j the k_j largest entries of (column j of U_B, row j of U_A)
are sent. U is the update or the factors (``compression.target``), plus the error memory.
"""

from __future__ import annotations

import math

import torch

from fedlora_ray.compress.base import fixed_order_sum_of_squares, rank_component_positions
from fedlora_ray.config import CompressionConfig


def rank_scores(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """s_j = ||b_j||_2 ||a_j||_2 for column j of B (d x r) and row j of A (r x k) [paper eq. (8)],
    in float64 as sqrt(||b_j||^2 ||a_j||^2), the squared norms summed in a fixed order [ours;
    docs/algorithms.md §2].

    Why not float32 norms: their bits depend on the CPU's SIMD width, and the product of two
    rounded square roots splits scores that are equal in exact arithmetic (||b||^2 = 2,
    ||a||^2 = 8 against 4 and 4), so which rank gets a tied extra entry would follow float noise.
    Here the squared norms are exact for float32 entries unless a sum needs more than 53 bits,
    their product is one correctly rounded multiplication and sqrt is monotone: scores equal in
    exact arithmetic come out bit-equal in those cases, and break by rank index (``allocate``).
    Any remaining split is a few ulps (about 1e-15 relative) and the same on every CPU."""
    return torch.sqrt(fixed_order_sum_of_squares(b.t()) * fixed_order_sum_of_squares(a))


def allocate(scores: torch.Tensor, total: int, cap: int) -> torch.Tensor:
    """Entries k_j of the module budget ``total`` that rank j may send (docs/algorithms.md §2).

    Proportional rule [paper III-B, eq. (9)]: k_j = total * s_j / sum_l s_l. Capping and rounding
    are ours: rank j has only ``cap`` = d + k entries, so the real shares are water-filled,
    x_j = min(cap, lambda * s_j) with lambda such that sum_j x_j = total (the split stays
    proportional to s_j among the ranks below the cap); then the x_j are rounded once, floor plus
    largest remainder (ties to the higher score, then the lower index), never above ``cap``.
    E.g. scores [10, 1, 1], cap 10, total 20 -> [10, 5, 5]. The result sums to ``total``
    (callers guarantee total <= r * cap). All scores zero, or any not finite: spread evenly.
    Ranks of score zero get nothing unless every positive-score rank is at the cap; then they
    share the rest evenly.

    When no cap binds, x_j is computed as total * s / sum(s) in float64, exactly as before the
    water-filling was added, so existing allocations are unchanged bit for bit."""
    r = scores.numel()
    if not 0 <= total <= r * cap:
        raise ValueError(f"cannot hand {total} entries to {r} ranks of at most {cap} each")
    s = scores.double().clamp_min(0)
    if not (bool(torch.isfinite(s).all()) and math.fsum(s.tolist()) > 0):
        s = torch.ones(r, dtype=torch.float64)  # no signal (or a diverged client): spread evenly
    # fsum: correctly rounded, so the same on every CPU whatever order a vectorised sum would take
    share = total * s / math.fsum(s.tolist())
    if float(share.max()) > cap:
        share = _water_fill(s, total, cap)
    return _round_shares(share.tolist(), s.tolist(), total, cap)


def _water_fill(s: torch.Tensor, total: int, cap: int) -> torch.Tensor:
    """x_j = min(cap, lambda * s_j) with sum_j x_j = total. A rank over the cap at the current
    lambda stays over it at the final one (lambda only grows as ranks are capped), so capping
    all of them at once and re-solving for the rest converges in at most r passes."""
    x = torch.zeros_like(s)
    free = torch.ones(s.numel(), dtype=torch.bool)
    rest = float(total)
    while True:
        live = free & (s > 0)
        if not bool(live.any()):  # only zero-score ranks are left below the cap: spread evenly
            x[free] = rest / int(free.sum()) if bool(free.any()) else 0.0
            return x
        lam = rest / math.fsum(s[live].tolist())
        over = live & (lam * s > cap)
        if not bool(over.any()):
            x[live] = lam * s[live]
            return x
        x[over] = float(cap)
        free &= ~over
        rest -= cap * int(over.sum())


def _round_shares(share: list[float], s: list[float], total: int, cap: int) -> torch.Tensor:
    """Floor of each share, then one unit to each of the largest remainders until the sum is
    ``total`` (ties to the higher score, then the lower index), skipping ranks at the cap."""
    r = len(share)
    k = [min(cap, math.floor(x)) for x in share]
    order = sorted(range(r), key=lambda j: (-(share[j] - k[j]), -s[j], j))
    missing = total - sum(k)
    while missing > 0:  # one pass in exact arithmetic; more only if float error left a gap
        for j in order:
            if missing > 0 and k[j] < cap:
                k[j] += 1
                missing -= 1
    for j in reversed(order):  # float error the other way: take from the smallest remainders
        if missing < 0 and k[j] > 0:
            k[j] -= 1
            missing += 1
    return torch.tensor(k, dtype=torch.long)


def select(
    ub: torch.Tensor,
    ua: torch.Tensor,
    budget: int,
    local_b: torch.Tensor,
    local_a: torch.Tensor,
    cfg: CompressionConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """Flat positions in [vec(U_B); vec(U_A)] to send. Scores come from ``local_b`` and
    ``local_a``: the locally trained factors, or U itself, so that scores and selection act on
    one object (``compression.soft_score``, docs/algorithms.md §2); the ranking inside a rank
    uses U, each half normalised by its norm
    (``soft_selection: normalized``, ours) or raw magnitudes (``raw``). Equal keys go to the
    lower position in rank j's component (column j of U_B top to bottom, then row j of U_A),
    which is also the lower flat position [ours; docs/algorithms.md §2].

    The normalised key is u^2 / ||u_half||^2 in float64, which ranks entries as
    |u| / ||u_half|| does: u^2 is exact, the squared norm is summed in a fixed order (exact for
    float32 entries unless it needs more than 53 bits) and the division is correctly rounded,
    so within a half the order is that of |u| exactly, and keys equal in exact arithmetic are
    equal floats whenever both squared norms are exact. The float32 |u| / ||u_half|| used
    before depends on the CPU through the norm and can round unequal keys together."""
    d, r = ub.shape
    k = ua.shape[1]
    per_rank = allocate(rank_scores(local_b, local_a), budget, d + k)
    col_b = ub.t()  # (r, d): rank j's column of U_B
    row_a = ua  # (r, k)
    if cfg.soft_selection == "normalized":
        tiny = torch.finfo(torch.float64).tiny  # an all-zero half keeps keys 0 / tiny = 0
        b64, a64 = col_b.double(), row_a.double()
        col_b = b64 * b64 / fixed_order_sum_of_squares(col_b).clamp_min(tiny).unsqueeze(1)
        row_a = a64 * a64 / fixed_order_sum_of_squares(row_a).clamp_min(tiny).unsqueeze(1)
    mag = torch.cat([col_b.abs(), row_a.abs()], dim=1)  # (r, d + k)
    # stable: among equal keys the lower component position comes first
    order = torch.argsort(mag, dim=1, descending=True, stable=True)
    keep = torch.arange(d + k).unsqueeze(0) < per_rank.unsqueeze(1)  # rank j's first k_j
    chosen = torch.gather(rank_component_positions(d, r, k), 1, order)[keep]
    return torch.sort(chosen).values
