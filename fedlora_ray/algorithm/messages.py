"""What crosses a process boundary each round: a task per client and a small reply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedlora_ray.compress.base import ModulePayload


@dataclass(frozen=True)
class ClientTask:
    """Train client ``client_id`` in ``round`` on the examples ``indices`` with RNG ``seed``.
    ``state`` is the client's persistent state from the driver's store: its error-feedback
    memory under "error" (empty for a client never sampled, or with no compression)."""

    client_id: int
    round: int
    seed: int
    indices: np.ndarray
    state: dict[str, Any] = field(default_factory=dict)
    keep_ratio: float | None = None  # the round's rho from the controller (None: the config's)
    components: int | None = None  # rank components k_i the client trains (None: all r)
    dp_sigma: float | None = None  # local DP: the noise multiplier it noises its update with


@dataclass
class ClientReply:
    """A small reply: the sparse LoRA update, the dense head, and what it cost."""

    client_id: int
    examples: int
    steps: int
    local_loss: float
    payload: dict[str, ModulePayload]  # per module, the sent entries of the update
    head: dict[str, torch.Tensor]  # the locally trained head, sent dense
    kept_entries: int
    bits_sent: int
    distortion: float
    train_seconds: float
    actor_id: str
    state: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1  # 2 and up: a worker died and the client was trained again elsewhere
