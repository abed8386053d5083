"""WordNet dataset and the three partitioners."""

import numpy as np
import pytest

from fedlora_ray.config import ConfigError
from fedlora_ray.data import load_wordnet, partition_indices
from fedlora_ray.data.partition import dirichlet, iid, max_clients, shards
from fedlora_ray.data.wordnet import clean_gloss, read_noun_glosses
from tests.conftest import tiny_config


def test_clean_gloss_drops_quoted_examples():
    raw = 'a domestic animal; "the dog barked all night"; "a long life"  '
    assert clean_gloss(raw) == "a domestic animal"
    assert clean_gloss("any of various rodents  ") == "any of various rodents"
    assert clean_gloss('a swap: "he sent Smith in"') == "a swap"
    assert clean_gloss('goods; women carrying shopping glance"') == "goods"  # unpaired quote


def test_glosses_carry_their_lexicographer_category():
    glosses = read_noun_glosses(tiny_config().data.wordnet_dir)
    animals = [t for _, t in glosses["animal"]]
    assert any("dog" in t for t in animals)
    assert not any('"' in t for cat in glosses.values() for _, t in cat)
    assert len(glosses["person"]) > 10_000  # WordNet 3.0: 11087 noun.person synsets


def test_split_is_fixed_balanced_and_disjoint():
    cfg = tiny_config("data.per_class_cap=50", "data.test_per_class=10").data
    train, test = load_wordnet(cfg)
    assert train.label_names == cfg.categories
    assert list(test.class_counts()) == [10] * 8
    assert list(train.class_counts()) == [40] * 8
    assert not set(train.texts) & set(test.texts)
    again_train, again_test = load_wordnet(cfg)
    assert again_test.texts == test.texts and again_train.texts == train.texts
    # The split depends on split_seed only; the test set is the head of the same draw.
    bigger_train, bigger_test = load_wordnet(
        tiny_config("data.per_class_cap=80", "data.test_per_class=10").data
    )
    assert bigger_test.texts == test.texts


def test_num_categories_takes_the_first_ones():
    train, _ = load_wordnet(tiny_config("data.num_categories=3").data)
    assert train.label_names == ("animal", "artifact", "body")
    assert set(np.unique(train.labels)) == {0, 1, 2}


def _check_partition(parts, n):
    flat = np.concatenate(parts)
    assert len(flat) == n and len(np.unique(flat)) == n  # every example dealt exactly once


def test_iid_is_a_balanced_seeded_permutation():
    parts = iid(103, 10, np.random.default_rng(0))
    _check_partition(parts, 103)
    assert {len(p) for p in parts} == {10, 11}
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(103, 10, np.random.default_rng(0))))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, iid(103, 10, np.random.default_rng(1))))


def test_shards_give_each_client_few_classes():
    labels = np.repeat(np.arange(8), 50)
    parts = shards(labels, 20, 2, np.random.default_rng(0))
    _check_partition(parts, 400)
    assert all(len(p) == 20 for p in parts)
    assert max(len(np.unique(labels[p])) for p in parts) <= 2 * 2  # a shard may straddle 2 classes
    more = shards(labels, 20, 10, np.random.default_rng(0))  # more, smaller shards: closer to IID
    assert np.mean([len(np.unique(labels[p])) for p in more]) > np.mean(
        [len(np.unique(labels[p])) for p in parts]
    )


def test_dirichlet_skew_follows_alpha():
    labels = np.repeat(np.arange(8), 100)

    def mean_classes(alpha):
        parts = dirichlet(labels, 10, alpha, np.random.default_rng(3))
        _check_partition(parts, 800)
        assert min(len(p) for p in parts) >= 1
        return np.mean([len(np.unique(labels[p])) for p in parts])

    assert mean_classes(0.05) < mean_classes(100.0)
    assert mean_classes(100.0) == 8


def test_dirichlet_that_cannot_fill_every_client_says_so():
    labels = np.repeat(np.arange(8), 10)
    with pytest.raises(ConfigError) as err:
        dirichlet(labels, 40, 0.01, np.random.default_rng(0), min_examples=1, max_tries=5)
    message = str(err.value)
    for fragment in ("'data.dirichlet_alpha' = 0.01", "5 Dirichlet draws", "federation.num_clients = 40",
                     "data.min_examples_per_client = 1", "floor(80 / 1) = 80 clients"):  # fmt: skip
        assert fragment in message
    # Past the hard limit floor(n / m) nothing is drawn: the refusal names the limit at once.
    with pytest.raises(ConfigError, match=r"'federation.num_clients' = 10: must be <= 6: .*'dirichlet'"):
        dirichlet(np.zeros(12, dtype=int), 10, 0.01, np.random.default_rng(0), min_examples=2)


@pytest.mark.parametrize("partition", ["iid", "shards", "dirichlet"])
def test_partition_indices_is_seeded(partition):
    cfg = tiny_config(f"data.partition={partition}").data
    labels = np.repeat(np.arange(8), 30)
    a = partition_indices(labels, 12, cfg, seed=4)
    b = partition_indices(labels, 12, cfg, seed=4)
    _check_partition(a, 240)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# The minimum rule (docs/algorithms.md §8): every partition gives each client at least
# data.min_examples_per_client examples, or refuses with the number of clients the data can serve.


def _frozen_partition_indices(labels, num_clients, cfg, seed, min_examples=1):
    """The partitioners as they were before the minimum rule, copied verbatim (the Dirichlet
    floor made a parameter): valid configs must still give exactly these partitions."""
    rng = np.random.default_rng([seed, 0x9A27])
    if cfg.partition == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]
    if cfg.partition == "shards":
        order = np.argsort(labels, kind="stable")
        pieces = np.array_split(order, num_clients * cfg.shards_per_client)
        dealt = rng.permutation(len(pieces))
        return [
            np.sort(np.concatenate([pieces[j] for j in dealt[i::num_clients]])) for i in range(num_clients)
        ]
    classes = np.unique(labels)
    for _ in range(1000):
        parts = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, cfg.dirichlet_alpha))) * len(idx)).astype(
                int
            )
            for i, piece in enumerate(np.split(idx, cuts[:-1])):
                parts[i].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_examples:
            return out
    raise AssertionError("the frozen Dirichlet draw failed")


def _data(*overrides):
    return tiny_config(*overrides).data


# Unbalanced classes, so that shards straddle classes and the Dirichlet cuts differ per class.
LABELS = np.repeat(np.arange(6), [90, 40, 70, 25, 60, 115])  # n = 400


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(
    ("partition", "num_clients", "extra"),
    [("iid", 10, []), ("iid", 399, []), ("iid", 400, []),
     ("shards", 20, []), ("shards", 200, []), ("shards", 133, ["data.shards_per_client=3"]),
     ("dirichlet", 10, []), ("dirichlet", 30, ["data.dirichlet_alpha=5"])],
)  # fmt: skip
def test_valid_configs_give_the_partition_they_gave_before(partition, num_clients, extra, seed):
    cfg = _data(f"data.partition={partition}", *extra)
    new = partition_indices(LABELS, num_clients, cfg, seed)
    old = _frozen_partition_indices(LABELS, num_clients, cfg, seed)
    assert len(new) == len(old) == num_clients
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(new, old))


@pytest.mark.parametrize("seed", [0, 4])
def test_dirichlet_redraws_as_before_for_a_higher_minimum(seed):
    cfg = _data("data.partition=dirichlet", "data.dirichlet_alpha=2", "data.min_examples_per_client=12")
    new = partition_indices(LABELS, 20, cfg, seed)
    old = _frozen_partition_indices(LABELS, 20, cfg, seed, min_examples=12)
    assert all(np.array_equal(a, b) for a, b in zip(new, old))
    # the floor took redraws: the first draw of this seed left a client below it
    assert min(map(len, _frozen_partition_indices(LABELS, 20, cfg, seed))) < 12


SERVED = [  # (partition, overrides, num_clients, m): up to each partition's limit
    ("iid", [], 400, 1), ("iid", [], 133, 3), ("iid", [], 80, 5), ("iid", [], 57, 7),
    ("shards", [], 200, 1), ("shards", [], 100, 3), ("shards", [], 66, 5), ("shards", [], 57, 4),
    ("shards", ["data.shards_per_client=1"], 57, 7), ("shards", ["data.shards_per_client=5"], 40, 7),
    ("dirichlet", [], 12, 5), ("dirichlet", ["data.dirichlet_alpha=50"], 40, 6),
    ("dirichlet", ["data.dirichlet_alpha=100"], 50, 4),
]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("partition", "extra", "num_clients", "m"), SERVED)
def test_every_partitioner_honours_the_minimum(partition, extra, num_clients, m, seed):
    cfg = _data(f"data.partition={partition}", f"data.min_examples_per_client={m}", *extra)
    assert num_clients <= max_clients(len(LABELS), cfg)
    parts = partition_indices(LABELS, num_clients, cfg, seed)
    _check_partition(parts, len(LABELS))
    assert len(parts) == num_clients and min(len(p) for p in parts) >= m


@pytest.mark.parametrize(
    ("partition", "extra", "m", "limit"),
    [("iid", [], 1, 400), ("iid", [], 3, 133), ("iid", [], 7, 57),
     ("shards", [], 1, 200), ("shards", [], 3, 100), ("shards", [], 4, 100), ("shards", [], 5, 66),
     ("shards", ["data.shards_per_client=1"], 7, 57), ("shards", ["data.shards_per_client=5"], 7, 40),
     ("shards", ["data.shards_per_client=3"], 1, 133),
     ("dirichlet", [], 1, 400), ("dirichlet", [], 6, 66)],
)  # fmt: skip
def test_one_client_past_the_limit_is_refused_with_the_limit(partition, extra, m, limit):
    cfg = _data(f"data.partition={partition}", f"data.min_examples_per_client={m}", *extra)
    assert max_clients(len(LABELS), cfg) == limit
    with pytest.raises(ConfigError) as err:
        partition_indices(LABELS, limit + 1, cfg, seed=0)
    message = str(err.value)
    assert f"'federation.num_clients' = {limit + 1}: must be <= {limit}:" in message
    assert f"can serve at most {limit:,} clients" in message
    assert f"data.min_examples_per_client = {m}" in message and f"data.partition = {partition!r}" in message
    if partition == "shards":
        assert "data.shards_per_client = " in message
    if partition != "dirichlet":  # at the limit itself every client is served, whatever the seed
        for seed in range(3):
            assert min(map(len, partition_indices(LABELS, limit, cfg, seed))) >= m


def test_a_shard_limit_is_the_last_count_whose_shards_all_hold_enough():
    """Below the limit every shard holds >= ceil(m / spc) examples; one client more and the
    split (as the seed cuts it) would hold a smaller shard, so some deal gives a client < m."""
    for spc in (1, 2, 3, 5):
        for m in (1, 2, 4, 7):
            cfg = _data(
                "data.partition=shards", f"data.shards_per_client={spc}", f"data.min_examples_per_client={m}"
            )
            limit = max_clients(len(LABELS), cfg)
            smallest = [min(map(len, np.array_split(LABELS, n * spc))) for n in (limit, limit + 1)]
            assert smallest[0] * spc >= m > smallest[1] * spc


def test_ten_thousand_clients_on_four_thousand_labels():
    labels = np.repeat(np.arange(8), 500)
    cfg = _data("data.partition=shards")  # 2 shards per client
    # Before: 20,000 shards cut from 4,000 examples, most empty; many clients dealt only empty ones.
    before = _frozen_partition_indices(labels, 10_000, cfg, seed=0)
    assert sum(len(p) == 0 for p in before) > 1000
    with pytest.raises(ConfigError) as err:
        partition_indices(labels, 10_000, cfg, seed=0)
    message = str(err.value)
    assert (
        "must be <= 2000" in message
        and "the 4,000 training examples can serve at most 2,000 clients" in message
    )
    assert "data.shards_per_client (1 shard per client serves up to 4,000 clients)" in message
    served = partition_indices(labels, 2000, cfg, seed=0)
    assert all(len(p) == 2 for p in served)
    for partition in ("iid", "dirichlet"):  # past floor(n / m) every partitioner refuses at once
        with pytest.raises(ConfigError, match="must be <= 4000"):
            partition_indices(labels, 10_000, _data(f"data.partition={partition}"), seed=0)


def test_preflight_refuses_before_any_work_with_the_datasets_size_fields():
    from fedlora_ray.preflight import check_data

    with pytest.raises(ConfigError) as err:  # tiny: 240 training examples, shards of 2
        check_data(tiny_config("federation.num_clients=100000"))
    message = str(err.value)
    assert message.startswith("config field 'federation.num_clients' = 100000: must be <= 120:")
    assert message.endswith("or use more training data (data.per_class_cap, data.num_categories)")
    with pytest.raises(ConfigError, match="must be <= 40: .*each to hold at least 3"):
        check_data(tiny_config("federation.num_clients=41", "data.min_examples_per_client=5"))
    check_data(tiny_config("federation.num_clients=40", "data.min_examples_per_client=5"))
