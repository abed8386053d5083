"""Split a round's clients across workers by estimated work (ours)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def balance(work: Sequence[float], bins: int) -> list[list[int]]:
    """Longest-processing-time-first: give each item, largest first, to the least-loaded bin.
    Returns item indices per bin (each bin in ascending index order); ties go to the lower
    bin, so the split is deterministic."""
    heap = [(0.0, b) for b in range(bins)]
    out: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(range(len(work)), key=lambda i: (-work[i], i)):
        load, b = heapq.heappop(heap)
        out[b].append(i)
        heapq.heappush(heap, (load + work[i], b))
    return [sorted(x) for x in out]


def cut_passes(work: Sequence[float], per_pass: int) -> list[list[int]]:
    """Cut a round's clients into passes of at most ``per_pass`` (``runtime.clients_per_pass``)
    that train together: ceil(n / per_pass) passes of near-equal size, clients of similar work
    in the same pass (so few slots sit idle while the longest client finishes). A pure function
    of the work list, so every backend and any number of actors trains the same passes. Returns
    item indices per pass (each in ascending order)."""
    n = len(work)
    if per_pass <= 1 or n <= 1:
        return [[i] for i in range(n)]
    count = -(-n // per_pass)
    order = sorted(range(n), key=lambda i: (-work[i], i))
    out, start = [], 0
    for p in range(count):
        size = n // count + (1 if p < n % count else 0)
        out.append(sorted(order[start : start + size]))
        start += size
    return out
