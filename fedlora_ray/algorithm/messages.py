"""What crosses a process boundary each round: a task per client and a small reply."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedlora_ray.lora.adapter import Adapter


@dataclass(frozen=True)
class ClientTask:
    """Train client ``client_id`` in ``round`` on the examples ``indices`` with RNG ``seed``.
    ``state`` is the client's persistent state from the driver's store (error memory in
    later compressors); empty for plain FedAvg."""

    client_id: int
    round: int
    seed: int
    indices: np.ndarray
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ClientReply:
    client_id: int
    examples: int
    steps: int
    local_loss: float
    upload: Adapter  # the factors (and head) as the server receives them
    bits_sent: int
    train_seconds: float
    actor_id: str
    state: dict[str, torch.Tensor] = field(default_factory=dict)
