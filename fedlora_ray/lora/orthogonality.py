"""Near-orthogonality of LoRA factors: SOFT's regulariser and the error we log.

Penalty [seed eq. (7)]: sum over modules of ||A A^T - diag(A A^T)||_F^2 + ||B^T B - diag(B^T B)||_F^2.
Logged error [docs/algorithms.md §2; the normalisation is ours]: for each factor, the off-diagonal
Frobenius norm of its Gram matrix relative to the norm of its diagonal, pooled over modules.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def _offdiag(gram: torch.Tensor) -> torch.Tensor:
    return gram - torch.diag_embed(torch.diagonal(gram))


def orthogonal_penalty(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Differentiable penalty over (B, A) pairs; add lambda_o times it to the task loss."""
    total = None
    for b, a in pairs:
        term = _offdiag(a @ a.t()).square().sum() + _offdiag(b.t() @ b).square().sum()
        total = term if total is None else total + term
    assert total is not None, "no LoRA modules"
    return total


def orthogonality_error(
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[float | None, float | None]:
    """(error of A A^T, error of B^T B); None for a factor whose Gram diagonal is all zero
    (B at its zero initialisation)."""
    off = {"a": 0.0, "b": 0.0}
    diag = {"a": 0.0, "b": 0.0}
    for b, a in pairs:
        for name, gram in (("a", a.double() @ a.double().t()), ("b", b.double().t() @ b.double())):
            off[name] += float(_offdiag(gram).square().sum())
            diag[name] += float(torch.diagonal(gram).square().sum())
    return tuple(  # type: ignore[return-value]
        (off[n] ** 0.5) / (diag[n] ** 0.5) if diag[n] > 0 else None for n in ("a", "b")
    )
