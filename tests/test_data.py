"""WordNet dataset and the three partitioners."""

import numpy as np
import pytest

from fedlora_ray.data import load_wordnet, partition_indices
from fedlora_ray.data.partition import dirichlet, iid, shards
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
    with pytest.raises(ValueError, match="dirichlet_alpha"):
        dirichlet(np.zeros(12, dtype=int), 10, 0.01, np.random.default_rng(0), min_examples=2, max_tries=5)


@pytest.mark.parametrize("partition", ["iid", "shards", "dirichlet"])
def test_partition_indices_is_seeded(partition):
    cfg = tiny_config(f"data.partition={partition}").data
    labels = np.repeat(np.arange(8), 30)
    a = partition_indices(labels, 12, cfg, seed=4)
    b = partition_indices(labels, 12, cfg, seed=4)
    _check_partition(a, 240)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
