"""Server aggregation of separate LoRA factors and the covariance term it leaves behind."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedlora_ray.lora.adapter import Adapter


def _weighted_sum(weights: Sequence[float], tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((float(w) * t for w, t in zip(weights, tensors)), torch.zeros_like(tensors[0]))


def _normalised(weights: Sequence[float] | torch.Tensor) -> list[float]:
    w = torch.as_tensor(weights, dtype=torch.float64)
    return (w / w.sum()).tolist()


def aggregate_update(
    global_adapter: Adapter, uploads: Sequence[Adapter], weights: Sequence[float]
) -> Adapter:
    """U = sum_i w_i (X_i - X) with the weights as given (not renormalised), for B, A and the
    head. With w_i = p_i / sum_S p_j this is FedAvg's step; with w_i = p_i / q_i the unbiased
    step of independent sampling [docs/algorithms.md §6-7]. Entries a client did not send equal X, so
    they add nothing: for FSLoRA this is sum_i w_i M_i * (X_i - X)."""
    g = global_adapter
    lora = {
        m: (
            _weighted_sum(weights, [u.lora[m][0] - b for u in uploads]),
            _weighted_sum(weights, [u.lora[m][1] - a for u in uploads]),
        )
        for m, (b, a) in g.lora.items()
    }
    head = {k: _weighted_sum(weights, [u.head[k] - v for u in uploads]) for k, v in g.head.items()}
    return Adapter(lora, head)


def hetlora_target(
    uploads: Sequence[Adapter], data_weights: Sequence[float], norm_scale: Sequence[float] | None = None
) -> Adapter:
    """HetLoRA's aggregate of zero-padded client factors: per module,
    X = sum_i w_i pad(X_i) with w_i = c_i ||B_i A_i||_F / sum_j c_j ||B_j A_j||_F [HetLoRA, as
    summarised in docs/algorithms.md §6], c_i = ``norm_scale`` (1 by default; 1 / q_i under
    independent sampling, ours). While every product is zero (B starts at zero) the data weights
    stand in. The head is averaged with the data weights."""
    dw = _normalised(data_weights)
    lora = {}
    for m in uploads[0].lora:
        norms = torch.tensor(
            [float(torch.linalg.matrix_norm(u.lora[m][0].double() @ u.lora[m][1].double())) for u in uploads]
        )
        if norm_scale is not None:
            norms = norms.double() * torch.tensor(norm_scale, dtype=torch.float64)
        w = _normalised(norms) if norms.sum() > 0 else dw
        lora[m] = (
            _weighted_sum(w, [u.lora[m][0] for u in uploads]),
            _weighted_sum(w, [u.lora[m][1] for u in uploads]),
        )
    head = {k: _weighted_sum(dw, [u.head[k] for u in uploads]) for k in uploads[0].head}
    return Adapter(lora, head)


def zero_pad(adapter: Adapter, rank: int) -> Adapter:
    """The client's truncated factors as the server pads them: B[:, rank:] and A[rank:, :] zero."""
    lora = {}
    for m, (b, a) in adapter.lora.items():
        b, a = b.clone(), a.clone()
        b[:, rank:] = 0
        a[rank:, :] = 0
        lora[m] = (b, a)
    return Adapter(lora, adapter.head)


def covariance_term(uploads: Sequence[Adapter], weights: Sequence[float]) -> float:
    """C_t = sum_m || sum_i p_i B_i A_i - (sum_i p_i B_i)(sum_i p_i A_i) ||_F [seed IV-A,
    (20)-(22)]: the error of averaging the factors instead of their products. The first sum is
    one matmul, [p_1 B_1 ... p_K B_K] @ [A_1; ...; A_K]."""
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    total = 0.0
    for m in uploads[0].lora:
        bs = [u.lora[m][0].double() for u in uploads]
        as_ = [u.lora[m][1].double() for u in uploads]
        mean_of_products = torch.cat([wi * b for wi, b in zip(w, bs)], 1) @ torch.cat(as_, 0)
        b_bar = sum((wi * b for wi, b in zip(w, bs)), torch.zeros_like(bs[0]))
        a_bar = sum((wi * a for wi, a in zip(w, as_)), torch.zeros_like(as_[0]))
        total += float(torch.linalg.matrix_norm(mean_of_products - b_bar @ a_bar))
    return total
