"""Near-orthogonality of LoRA factors: SOFT's regulariser and the error we log.

Penalty [seed eq. (7)]: sum over modules of ||A A^T - diag(A A^T)||_F^2 + ||B^T B - diag(B^T B)||_F^2;
its scale-free variant [ours; docs/algorithms.md §2] takes each Gram matrix G as D^-1/2 G D^-1/2.
Logged error [docs/algorithms.md §2; the normalisation is ours]: for each factor, the off-diagonal
Frobenius norm of its Gram matrix relative to the norm of its diagonal, pooled over modules.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

_TINY = 1e-30  # floor of a squared norm: B starts at zero


def _offdiag(gram: torch.Tensor) -> torch.Tensor:
    return gram - torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))


def _scaled(gram: torch.Tensor) -> torch.Tensor:
    """D^-1/2 G D^-1/2 with D = diag(G): the cosines between rank components, whatever their
    norms (a zero component contributes zeros)."""
    norms = torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(_TINY).sqrt()
    return gram / (norms[..., :, None] * norms[..., None, :])


def _matrix(factor: torch.Tensor) -> torch.Tensor:
    """A factor as a matrix, or a stack of matrices (C x d x r): a 1x1 convolution's peft
    factor (d x r x 1 x 1) is read as the d x r matrix it is."""
    return factor.flatten(1) if factor.dim() == 4 else factor


def orthogonal_penalty(
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], scaled: bool = False
) -> torch.Tensor:
    """Differentiable penalty over (B, A) pairs; add lambda_o times it to the task loss.
    ``scaled`` (``compression.orth_penalty: scaled``, ours) divides each Gram matrix by its
    diagonal first, so that B, whose entries are about 100 times smaller than A's, is pushed
    towards orthogonality as hard as A. Factors of 1x1 convolutions are read as matrices; stacked
    factors (C x d x r, C x r x k: several clients' at once) give the sum of their penalties."""
    gram = _scaled if scaled else (lambda g: g)
    total = None
    for b, a in pairs:
        b, a = _matrix(b), _matrix(a)
        term = _offdiag(gram(a @ a.mT)).square().sum() + _offdiag(gram(b.mT @ b)).square().sum()
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
        b, a = b.flatten(1).double(), a.flatten(1).double()
        for name, gram in (("a", a @ a.t()), ("b", b.t() @ b)):
            off[name] += float(_offdiag(gram).square().sum())
            diag[name] += float(torch.diagonal(gram).square().sum())
    return tuple(  # type: ignore[return-value]
        (off[n] ** 0.5) / (diag[n] ** 0.5) if diag[n] > 0 else None for n in ("a", "b")
    )
