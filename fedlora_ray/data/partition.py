"""Deal training examples to clients: IID, shards (seed V-D) and Dirichlet over labels.

Each function takes a numpy Generator, so a partition is a pure function of its seed. Every
partition gives each client at least m = ``data.min_examples_per_client`` examples, or refuses
the config with a ConfigError that says how many clients the data can serve (docs/algorithms.md
§8, the minimum rule is ours): an empty client would be sampled and train zero steps.
"""

from __future__ import annotations

import numpy as np

from fedlora_ray.config import ConfigError, DataConfig


def max_clients(num_examples: int, cfg: DataConfig) -> int:
    """The most clients ``cfg.partition`` can give ``cfg.min_examples_per_client`` examples each,
    out of ``num_examples`` (docs/algorithms.md §8, ours). For ``dirichlet`` this is the hard
    limit floor(n / m); a draw may still fail below it (``dirichlet`` then says so)."""
    spc = cfg.shards_per_client if cfg.partition == "shards" else None
    return _limit(num_examples, cfg.min_examples_per_client, spc)


def _limit(num_examples: int, min_examples: int, shards_per_client: int | None) -> int:
    if shards_per_client is None:  # iid, dirichlet: the examples must go round
        return num_examples // min_examples
    # Shards hold floor(n / S) or one more example, S = N * spc; a client is guaranteed m
    # whatever the deal iff spc * floor(n / S) >= m, i.e. every shard holds ceil(m / spc).
    return num_examples // (shards_per_client * _per_shard(min_examples, shards_per_client))


def _per_shard(min_examples: int, shards_per_client: int) -> int:
    return -(-min_examples // shards_per_client)  # ceil


def _refusal(
    num_examples: int, num_clients: int, min_examples: int, partition: str, shards_per_client: int | None
) -> ConfigError:
    limit = _limit(num_examples, min_examples, shards_per_client)
    scheme = f"data.partition = {partition!r}"
    lower = ["federation.num_clients"]
    if shards_per_client is not None:
        per_shard = _per_shard(min_examples, shards_per_client)
        scheme += (
            f" with data.shards_per_client = {shards_per_client} (num_clients x {shards_per_client} "
            f"shards cut from the label-sorted examples, each to hold at least {per_shard})"
        )
        one_each = _limit(num_examples, min_examples, 1)
        if one_each > limit:
            lower.append(f"data.shards_per_client (1 shard per client serves up to {one_each:,} clients)")
    if min_examples > 1:
        lower.append("data.min_examples_per_client")
    fields = " or ".join([", ".join(lower[:-1]), lower[-1]]) if len(lower) > 1 else lower[0]
    return ConfigError(
        f"config field 'federation.num_clients' = {num_clients}: must be <= {limit}: with "
        f"data.min_examples_per_client = {min_examples} and {scheme}, the {num_examples:,} training "
        f"examples can serve at most {limit:,} clients; lower {fields}{',' if len(lower) > 1 else ''} "
        "or use more training data"
    )


def iid(
    num_examples: int, num_clients: int, rng: np.random.Generator, min_examples: int = 1
) -> list[np.ndarray]:
    """A random permutation cut into ``num_clients`` near-equal parts (docs/algorithms.md §8).

    Parts hold floor(n / N) or one more example, so every client gets ``min_examples`` iff
    n >= N * min_examples; otherwise ConfigError (ours)."""
    if num_clients > _limit(num_examples, min_examples, None):
        raise _refusal(num_examples, num_clients, min_examples, "iid", None)
    return [np.sort(p) for p in np.array_split(rng.permutation(num_examples), num_clients)]


def shards(
    labels: np.ndarray,
    num_clients: int,
    shards_per_client: int,
    rng: np.random.Generator,
    min_examples: int = 1,
) -> list[np.ndarray]:
    """Seed V-D (docs/algorithms.md §8): sort by label, cut into ``num_clients * shards_per_client``
    contiguous shards (each mostly one class) and deal them at random, ``shards_per_client`` per
    client.

    Minimum rule (ours): the shard count is never changed behind the researcher's back. The
    split is accepted only when every shard holds at least ceil(m / shards_per_client) examples,
    so that no shard is empty and every client holds at least m = ``min_examples`` whatever the
    deal: n >= N * spc * ceil(m / spc). Otherwise ConfigError, with the number of clients the
    data can serve, floor(n / (spc * ceil(m / spc)))."""
    if num_clients > _limit(len(labels), min_examples, shards_per_client):
        raise _refusal(len(labels), num_clients, min_examples, "shards", shards_per_client)
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
    """Per class, client proportions ~ Dirichlet(alpha) (docs/algorithms.md §8); redrawn until
    every client holds at least ``min_examples`` (ours, the usual recipe: an empty client cannot
    train). ConfigError at once when N > floor(n / m), and after ``max_tries`` failed draws."""
    num_examples = len(labels)
    if num_clients > _limit(num_examples, min_examples, None):
        raise _refusal(num_examples, num_clients, min_examples, "dirichlet", None)
    classes = np.unique(labels)
    fullest = 0  # the largest smallest-client count over the failed draws, for the message
    for _ in range(max_tries):
        # Client sizes first: a failed draw builds no index arrays (N = 10^4 clients would
        # make that the whole cost). The draws are the same, in the same order, either way.
        draws = []
        sizes = np.zeros(num_clients, dtype=np.int64)
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)
            bounds = np.clip(np.concatenate([[0], cuts[:-1], [len(idx)]]), 0, len(idx))
            counts = np.diff(bounds)  # client i gets idx[bounds[i]:bounds[i + 1]]
            sizes += counts
            draws.append((idx, counts))
        if sizes.min() >= min_examples:
            owner = np.empty(num_examples, dtype=np.int64)
            for idx, counts in draws:
                owner[idx] = np.repeat(np.arange(num_clients), counts)
            by_client = np.argsort(owner, kind="stable")  # each client's indices ascending
            return np.split(by_client, np.cumsum(sizes)[:-1])
        fullest = max(fullest, int(sizes.min()))
    lower_m = " or data.min_examples_per_client" if min_examples > 1 else ""
    raise ConfigError(
        f"config field 'data.dirichlet_alpha' = {alpha}: {max_tries} Dirichlet draws each left a client "
        f"with fewer than data.min_examples_per_client = {min_examples} of the {num_examples:,} "
        f"training examples among federation.num_clients = {num_clients} (the best draw's smallest "
        f"client held {fullest}; the hard limit is floor({num_examples} / {min_examples}) = "
        f"{num_examples // min_examples:,} clients, and draws this skewed need far fewer); raise "
        f"data.dirichlet_alpha (more even shares), lower federation.num_clients{lower_m}, or use more "
        "training data"
    )


def natural(labels: np.ndarray, num_clients: int, min_examples: int = 1) -> list[np.ndarray]:
    """One client per label value, client i holding every example of label i (docs/algorithms.md
    §13, the natural split of FlowerTune and pfl-research: a user id, a source). Nothing is drawn.
    ConfigError unless there are exactly ``num_clients`` values, each with ``min_examples``."""
    values = int(labels.max()) + 1 if len(labels) else 0
    if num_clients != values:
        raise ConfigError(
            f"config field 'federation.num_clients' = {num_clients}: data.partition = 'natural' gives "
            f"one client per value of data.category_column, and the training data has {values}; set "
            f"federation.num_clients={values}"
        )
    parts = [np.flatnonzero(labels == c) for c in range(values)]
    sizes = np.array([len(p) for p in parts])
    if sizes.min(initial=min_examples) < min_examples:
        raise ConfigError(
            f"config field 'data.min_examples_per_client' = {min_examples}: under data.partition = "
            f"'natural', client {int(sizes.argmin())} holds {int(sizes.min())} training examples"
        )
    return parts


def partition_indices(labels: np.ndarray, num_clients: int, cfg: DataConfig, seed: int) -> list[np.ndarray]:
    """Client index arrays for ``cfg.partition``, seeded by the run seed; every client holds at
    least ``cfg.min_examples_per_client`` examples, or ConfigError (docs/algorithms.md §8)."""
    rng = np.random.default_rng([seed, 0x9A27])
    m = cfg.min_examples_per_client
    if cfg.partition == "iid":
        return iid(len(labels), num_clients, rng, m)
    if cfg.partition == "shards":
        return shards(labels, num_clients, cfg.shards_per_client, rng, m)
    if cfg.partition == "natural":
        return natural(labels, num_clients, m)
    return dirichlet(labels, num_clients, cfg.dirichlet_alpha, rng, m)
