"""What a federated LoRA scheme is: one object per ``algorithm.kind``, looked up by name.

A scheme answers four questions, and nothing else in the round knows which scheme runs:
- which rank components a client trains this round (all of them, a sketch, a prefix), and how
  they are scaled in the forward;
- what the client uploads from its local result, and what it keeps for next time;
- how the server turns the round's uploads and weights into one update of the global adapter;
- what each client's ratio s_i = components / r is for the run (the payload-bit model prices it).
A new scheme subclasses ``Scheme`` and calls ``register_scheme``; config validation accepts its
name from then on and asks its ``validate``. The built-in schemes' rules live in ``rules`` (no
torch), which config validation reads without importing this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from fedlora_ray.algorithm.aggregate import aggregate_update
from fedlora_ray.algorithm.sampling import RoundWeights
from fedlora_ray.algorithm.schemes import rules
from fedlora_ray.compress.base import Compressed
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.lora.adapter import Adapter

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LocalUpdate:
    """What a client's local round produced, for its scheme to turn into an upload."""

    delta: Factors  # X_local - X_global per module
    local: Factors  # the locally trained factors
    components: dict[str, torch.Tensor] | None  # the rank components trained per module (None: all)
    keep_ratio: float | None  # the round's rho from the controller (None: the config's)
    state: dict[str, Any]  # the client's stored state (error memory)
    seed: int  # the client's round seed


_RATIO_STREAM = 6  # each client's ratio k_i / r is drawn from its own stream of the run seed


def draw_client_ratios(seed: int, num_clients: int, options: tuple[float, ...]) -> np.ndarray:
    """Each client's ratio k_i / r (or r_i / r), drawn uniformly from ``options`` once per run
    [docs/algorithms.md §6: heterogeneous ranks from a configured distribution]."""
    rng = np.random.default_rng([seed, _RATIO_STREAM])
    return np.asarray(options, dtype=np.float64)[rng.integers(len(options), size=num_clients)]


class Scheme:
    """The default answers are FedAvg's: every client trains the full rank, the server averages
    the uploads with the round's weights [paper II-B]."""

    name: ClassVar[str] = ""
    trains_a: ClassVar[bool] = True  # False: A stays frozen at its seeded init (FFA-LoRA)

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.rank = cfg.model.lora_rank

    # ---- config
    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        """Raise ConfigError for settings this scheme cannot run with (by default: it sends its
        own update, so no compression.method applies)."""
        rules.sends_its_own_update(cfg)

    # ---- the run
    def client_ratios(self, num_clients: int, seed: int) -> np.ndarray:
        """s_i for every client before any controller acts (1: the full rank)."""
        return np.ones(num_clients)

    # ---- the client
    @property
    def orthogonal_weight(self) -> float:
        """lambda_o of SOFT's regulariser in the local loss (0: none)."""
        return 0.0

    def components(self, seed: int, modules: Sequence[str], k: int | None) -> dict[str, torch.Tensor] | None:
        """The rank components each module trains this round (None: all r, unscaled)."""
        return None

    def component_scale(self, components: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The diagonal of S per module in W0 + B S A: 1 on the trained components, 0 elsewhere."""
        out = {}
        for m, idx in components.items():
            s = torch.zeros(self.rank)
            s[idx] = 1.0
            out[m] = s
        return out

    def upload(self, update: LocalUpdate) -> tuple[Compressed, dict[str, Any]]:
        """(what the client sends of its local change, its new persistent state)."""
        raise NotImplementedError

    def module_upload(
        self, d: int, k: int, r: int, components: int, keep_ratio: float, value_bits: int
    ) -> tuple[int, int]:
        """One module's upload without training, (entries, bits), as ``upload`` would count it:
        controller-only mode prices rounds with it [docs/algorithms.md §4]."""
        raise ConfigError(
            f"config field 'algorithm.kind' = {self.name!r}: this scheme has no payload model for "
            "controller-only mode (give its class a module_upload)"
        )

    # ---- the server
    def held(self, upload: Adapter, components: int) -> Adapter:
        """What the server holds for a client, from the global adapter plus its sent update
        (entries not sent keep the global value [docs/algorithms.md §2])."""
        return upload

    def aggregate(
        self, global_adapter: Adapter, uploads: Sequence[Adapter], weights: RoundWeights,
        components: np.ndarray,
    ) -> Adapter:  # fmt: skip
        """The update U of the global adapter: sum_i w_i (X_i - X) for B, A and the head, with the
        round's weights as given [paper II-B; docs/algorithms.md §6-7]. Entries a client did
        not send equal X, so they add nothing (for FSLoRA this is sum_i w_i M_i * (X_i - X)).
        ``components`` holds each uploader's k_i."""
        return aggregate_update(global_adapter, uploads, weights.values.tolist())


class RatioScheme(Scheme):
    """A scheme whose clients train k_i = s_i r of the r components, s_i drawn once per client
    from ``algorithm.client_ratios`` [docs/algorithms.md §6]."""

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        rules.draws_client_ratios(cfg)

    def client_ratios(self, num_clients: int, seed: int) -> np.ndarray:
        return draw_client_ratios(seed, num_clients, self.cfg.algorithm.client_ratios)
