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
