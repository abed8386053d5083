"""Error feedback [paper: §III-C, eqs. (10)-(14)]: U = X + e, then e <- U - C(U), per client and
per factor, kept by the driver across the rounds the client sits out (docs/algorithms.md §2).

X is what ``compression.target`` sparsifies: the local change X_local - X_global (``update``,
ours) or the local factors X_local themselves (``factors``, eq. (10) as written: "B_i^t and
A_i^t represent obtained model of client i"). The memory e holds exactly what was not sent."""

from __future__ import annotations

from fedlora_ray.compress.base import Compressed, Factors, dense_update


def compensate(delta: Factors, memory: Factors | None) -> Factors:
    """The matrices to sparsify: X (the local change, or the local factors) plus the residual
    not sent before."""
    if not memory:
        return {m: (b.clone(), a.clone()) for m, (b, a) in delta.items()}
    return {m: (b + memory[m][0], a + memory[m][1]) for m, (b, a) in delta.items()}


def residual(update: Factors, sent: Compressed) -> Factors:
    """e = U - C(U): exactly the entries that were not transmitted."""
    out = {}
    for m, (ub, ua) in update.items():
        cb, ca = dense_update(sent.payload[m], ub.shape, ua.shape)
        out[m] = (ub - cb, ua - ca)
    return out
