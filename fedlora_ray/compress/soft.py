"""SOFT: sparsified orthogonal fine-tuning [seed III-A/B, eqs. (8)-(9)].

With near-orthogonal factors, s_j = ||b_j|| * ||a_j|| stands in for the j-th singular value of
B A at O(r(d+k)) cost, no product and no SVD. The module's budget K_m is shared among ranks in
proportion to s_j, and within rank j the k_j largest entries of (column j of U_B, row j of U_A)
are sent.
"""

from __future__ import annotations

import torch

from fedlora_ray.compress.base import rank_component_positions
from fedlora_ray.config import CompressionConfig


def rank_scores(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """s_j = ||b_j||_2 ||a_j||_2 for column j of B (d x r) and row j of A (r x k) [seed (8)]."""
    return torch.linalg.vector_norm(b, dim=0) * torch.linalg.vector_norm(a, dim=1)


def allocate(scores: torch.Tensor, total: int, cap: int) -> torch.Tensor:
    """k_j = total * s_j / sum(s) [seed (9)], rounded by largest remainder; a k_j over ``cap``
    (= d + k, the entries rank j has) is capped and the excess handed to the other ranks in
    descending score order (rounding and capping ours). Sums to ``total`` (<= r * cap)."""
    r = scores.numel()
    s = scores.double().clamp_min(0)
    s = s if float(s.sum()) > 0 else torch.ones(r, dtype=torch.float64)  # no signal: spread evenly
    share = total * s / s.sum()
    k = share.floor().long()
    # largest remainders first; ties to the higher score, then the lower index
    order = sorted(range(r), key=lambda j: (-float(share[j] - k[j]), -float(s[j]), j))
    for j in order[: total - int(k.sum())]:
        k[j] += 1
    excess = int((k - cap).clamp_min(0).sum())
    k = k.clamp_max(cap)
    for j in sorted(range(r), key=lambda j: (-float(s[j]), j)):
        if excess == 0:
            break
        give = min(excess, cap - int(k[j]))
        k[j] += give
        excess -= give
    return k


def select(
    ub: torch.Tensor,
    ua: torch.Tensor,
    budget: int,
    local_b: torch.Tensor,
    local_a: torch.Tensor,
    cfg: CompressionConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """Flat positions in [vec(U_B); vec(U_A)] to send. Scores come from the locally trained
    factors; the ranking inside a rank uses the update, each half normalised by its norm
    (``soft_selection: normalized``, ours) or raw magnitudes (``raw``)."""
    d, r = ub.shape
    k = ua.shape[1]
    per_rank = allocate(rank_scores(local_b, local_a), budget, d + k)
    col_b = ub.t().abs()  # (r, d): rank j's column of U_B
    row_a = ua.abs()  # (r, k)
    if cfg.soft_selection == "normalized":
        col_b = col_b / col_b.norm(dim=1, keepdim=True).clamp_min(1e-30)
        row_a = row_a / row_a.norm(dim=1, keepdim=True).clamp_min(1e-30)
    mag = torch.cat([col_b, row_a], dim=1)  # (r, d + k)
    order = torch.argsort(mag, dim=1, descending=True, stable=True)
    keep = torch.arange(d + k).unsqueeze(0) < per_rank.unsqueeze(1)  # rank j's first k_j
    chosen = torch.gather(rank_component_positions(d, r, k), 1, order)[keep]
    return torch.sort(chosen).values
