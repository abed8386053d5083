"""Server aggregation of separate LoRA factors and the covariance term it leaves behind."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedlora_ray.lora.adapter import Adapter


def fedavg(uploads: Sequence[Adapter], weights: Sequence[float]) -> Adapter:
    """Average B and A **separately**, weighted by the data shares renormalised over the
    sampled set [seed II-B]. The head, when trained, is averaged the same way."""
    w = torch.tensor(weights, dtype=torch.float64)
    w = (w / w.sum()).to(torch.float32)
    first = uploads[0]
    lora = {
        m: (
            sum((wi * u.lora[m][0] for wi, u in zip(w, uploads)), torch.zeros_like(first.lora[m][0])),
            sum((wi * u.lora[m][1] for wi, u in zip(w, uploads)), torch.zeros_like(first.lora[m][1])),
        )
        for m in first.lora
    }
    head = {
        k: sum((wi * u.head[k] for wi, u in zip(w, uploads)), torch.zeros_like(first.head[k]))
        for k in first.head
    }
    return Adapter(lora, head)


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
