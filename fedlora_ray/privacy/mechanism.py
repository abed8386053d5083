"""Client-level differential privacy: the clipped, noised aggregate (central) and the noised
client update (local) [docs/algorithms.md §14].

Central [DP-FedAvg, McMahan et al. 2018, with a fixed denominator; weighting ours]: client i's
contribution is its weighted change c_i = omega_i Delta_i, Delta_i = X_i - X over every tensor it
holds (LoRA factors and head), omega_i = (p_i / q_i) K_bar with K_bar = sum_j q_j the expected
number of participants (1 for equal data shares and uniform sampling). c_i is clipped to norm C
as a whole. The driver releases S = sum_i clip(c_i) + N(0, sigma^2 C^2) on every coordinate of
every tensor the scheme trains (sent or not, so the sparsity pattern is not released) and steps
with U = S / K_bar, an unbiased estimate of sum_i p_i Delta_i when nothing is clipped. Removing
one client moves S by at most C before the noise, whatever the scheme, the sparsifier or the
error memory put into Delta_i: each round's release is a Gaussian mechanism of sensitivity C.

Local [ours]: each client clips its dense change (LoRA factors and head) to norm C and adds
N(0, sigma^2 C^2) to every trained coordinate before its scheme sparsifies it; sparsification and
the error memory then act on released (noised) values only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedlora_ray.lora.adapter import Adapter

_NOISE_STREAM = 7  # central: the round's noise, from [seed, t, 7]
_LOCAL_NOISE_STREAM = 0xD1FF  # local: client round seed XOR this


def central_noise_generator(seed: int, round_: int) -> torch.Generator:
    """The round's noise draw, a pure function of (seed, round) like every draw (§10)."""
    state = np.random.SeedSequence([seed, round_, _NOISE_STREAM]).generate_state(1, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]))


def local_noise_generator(client_seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(client_seed ^ _LOCAL_NOISE_STREAM)


def global_norm(tensors: Sequence[torch.Tensor]) -> float:
    """The L2 norm of all the tensors as one vector (summed in float64)."""
    total = torch.zeros((), dtype=torch.float64)
    for t in tensors:
        total += t.double().square().sum()
    return float(total.sqrt())


def clip_factor(norm: float, clip_norm: float) -> float:
    """min(1, C / norm): the scale that brings a vector of this norm within C."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


def _deltas(global_adapter: Adapter, held: Adapter) -> list[torch.Tensor]:
    """Delta_i = X_i - X, tensor by tensor in the adapter's fixed order."""
    return [x - g for x, g in zip(held.tensors(), global_adapter.tensors())]


def noised_tensors(like: Adapter, trains_a: bool) -> list[bool]:
    """Per tensor of the adapter's order: whether the release carries noise on it (what the
    scheme trains: B, A unless the scheme freezes it, and the head when it trains)."""
    return [flag for _ in like.lora for flag in (True, trains_a)] + [True] * len(like.head)


@dataclass(frozen=True)
class CentralRelease:
    update: Adapter  # U = S / K_bar
    clipped: int  # contributions scaled down to C
    contribution_norms: list[float]  # ||c_i|| before clipping, in upload order


def contributions_sum(
    global_adapter: Adapter, held: Sequence[Adapter], omega: Sequence[float], clip_norm: float
) -> tuple[list[torch.Tensor], list[float]]:
    """sum_i clip(omega_i Delta_i, C), tensor by tensor, and each ||omega_i Delta_i||."""
    total = [torch.zeros_like(t) for t in global_adapter.tensors()]
    norms = []
    for upload, w in zip(held, omega):
        contribution = [float(w) * d for d in _deltas(global_adapter, upload)]
        norm = global_norm(contribution)
        norms.append(norm)
        scale = clip_factor(norm, clip_norm)
        for acc, c in zip(total, contribution):
            acc.add_(c, alpha=scale)
    return total, norms


def central_release(
    global_adapter: Adapter, held: Sequence[Adapter], omega: Sequence[float], k_bar: float,
    clip_norm: float, sigma: float, generator: torch.Generator, trains_a: bool,
) -> CentralRelease:  # fmt: skip
    """The round's private update (module docstring)."""
    total, norms = contributions_sum(global_adapter, held, omega, clip_norm)
    std = sigma * clip_norm
    for acc, noised in zip(total, noised_tensors(global_adapter, trains_a)):
        if noised and std > 0:
            acc.add_(torch.randn(acc.shape, generator=generator, dtype=acc.dtype), alpha=std)
    update = global_adapter.with_tensors([t / k_bar for t in total])
    return CentralRelease(update, sum(n > clip_norm for n in norms), norms)


def local_release(
    delta: Sequence[torch.Tensor], noised: Sequence[bool], clip_norm: float, sigma: float,
    generator: torch.Generator,
) -> tuple[list[torch.Tensor], float]:  # fmt: skip
    """A client's change clipped to norm C, then N(0, sigma^2 C^2) on each trained coordinate;
    and its norm before clipping."""
    norm = global_norm(delta)
    scale = clip_factor(norm, clip_norm)
    std = sigma * clip_norm
    out = []
    for d, flag in zip(delta, noised):
        d = d * scale
        if flag and std > 0:
            d = d + std * torch.randn(d.shape, generator=generator, dtype=d.dtype)
        out.append(d)
    return out, norm
