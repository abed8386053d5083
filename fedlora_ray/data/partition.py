"""Deal training examples to clients: IID, shards (seed V-D) and Dirichlet over labels.

Each function takes a numpy Generator, so a partition is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np

from fedlora_ray.config import DataConfig


def iid(num_examples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation cut into ``num_clients`` near-equal parts."""
    return [np.sort(p) for p in np.array_split(rng.permutation(num_examples), num_clients)]


def shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Seed V-D: sort by label, cut into ``num_clients * shards_per_client`` contiguous shards
    (each mostly one class) and deal them at random, ``shards_per_client`` per client."""
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, num_clients * shards_per_client)
    dealt = rng.permutation(len(pieces))
    return [np.sort(np.concatenate([pieces[j] for j in dealt[i::num_clients]])) for i in range(num_clients)]


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_examples: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Per class, client proportions ~ Dirichlet(alpha); redrawn until every client holds at
    least ``min_examples`` (ours, the usual recipe: an empty client cannot train)."""
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)
            for i, piece in enumerate(np.split(idx, cuts[:-1])):
                parts[i].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_examples:
            return out
    raise ValueError(
        f"Dirichlet partition with alpha={alpha} left a client with fewer than {min_examples} "
        f"examples in {max_tries} draws; raise data.dirichlet_alpha or lower federation.num_clients"
    )


def partition_indices(labels: np.ndarray, num_clients: int, cfg: DataConfig, seed: int) -> list[np.ndarray]:
    """Client index arrays for ``cfg.partition``, seeded by the run seed."""
    if len(labels) < num_clients:
        raise ValueError(f"{len(labels)} training examples cannot be dealt to {num_clients} clients")
    rng = np.random.default_rng([seed, 0x9A27])
    if cfg.partition == "iid":
        return iid(len(labels), num_clients, rng)
    if cfg.partition == "shards":
        return shards(labels, num_clients, cfg.shards_per_client, rng)
    return dirichlet(labels, num_clients, cfg.dirichlet_alpha, rng)
