"""AG News (the CSV pair, written here in the standard format) and the DistilBERT families
(a tiny random one, and pretrained weights from a local folder or, offline, a clear error)."""

from __future__ import annotations

import csv
import sys
import types

import numpy as np
import pytest
import torch

import fedlora_ray.tasks.ag_news as ag_news
import fedlora_ray.tasks.distilbert  # noqa: F401  (registers distilbert, distilbert_tiny)
from fedlora_ray.config import ConfigError, load_config
from fedlora_ray.engine.serial import run_serial
from fedlora_ray.lora.adapter import get_adapter
from fedlora_ray.preflight import check_run
from fedlora_ray.tasks import lora_module_dims, model_family
from tests.conftest import tiny_config

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 5


def make_ag_news(folder, train: int = TRAIN_PER_CLASS, test: int = TEST_PER_CLASS):
    """The CSV pair as AG News ships it: no header, every field quoted, class index 1-4; one
    description holds a quoted comma and a quote, one an escaped newline (backslash, n)."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ("world", "sports", "business", "science")
    for name, n in (("train.csv", train), ("test.csv", test)):
        rows = [
            (c + 1, f"{words[c].title()} {name[:-4]} title {i}", f"About {words[c]}, item {i}.")
            for i in range(n)
            for c in range(4)
        ]
        rows[0] = (1, "Wall St. Bears", 'Reuters - Short-sellers, "the band," are back')
        rows[1] = (2, "Two lines", "first line\\nsecond line")
        with open(folder / name, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(rows)
    return folder


def _data(*overrides: str):
    return load_config(None, list(overrides)).data


def test_reads_the_csv_pair(tmp_path):
    root = make_ag_news(tmp_path / "ag")
    assert '"Reuters - Short-sellers, ""the band,"" are back"' in (root / "train.csv").read_text()
    train, test = ag_news.ag_news_splits(_data(f"data.root={root}"))
    assert len(train) == 4 * TRAIN_PER_CLASS and len(test) == 4 * TEST_PER_CLASS
    assert train.label_names == ("World", "Sports", "Business", "Sci/Tech")
    assert train.labels.dtype == np.int64 and not train.labels.flags.writeable
    assert isinstance(train.examples, tuple) and all(isinstance(t, str) for t in train.examples)
    assert np.bincount(train.labels).tolist() == [TRAIN_PER_CLASS] * 4
    assert train.labels[:4].tolist() == [0, 1, 2, 3]  # class index 1-4 -> 0-3, file order
    assert train.examples[0] == 'Wall St. Bears. Reuters - Short-sellers, "the band," are back'
    assert train.examples[1] == "Two lines. first line second line"
    assert train.examples[2] == "Business train title 0. About business, item 0."
    assert test.examples[2] == "Business test title 0. About business, item 0."


def test_caps_per_class_are_seeded_and_classes_txt_names_labels(tmp_path):
    root = make_ag_news(tmp_path / "ag")
    cap = [f"data.root={root}", "data.train_per_class=7", "data.test_per_class=2"]
    train, test = ag_news.ag_news_splits(_data(*cap))
    assert np.bincount(train.labels).tolist() == [7] * 4 and np.bincount(test.labels).tolist() == [2] * 4
    again, _ = ag_news.ag_news_splits(_data(*cap))
    assert again.examples == train.examples  # deterministic (and cached)
    other, _ = ag_news.ag_news_splits(_data(*cap, "data.split_seed=1"))
    assert other.examples != train.examples and np.bincount(other.labels).tolist() == [7] * 4
    full_train, _ = ag_news.ag_news_splits(_data(f"data.root={root}"))
    assert set(train.examples) < set(full_train.examples)
    (root / "classes.txt").write_text("W\nS\nB\nT\n")
    named, _ = ag_news.ag_news_splits(_data(*cap, "data.split_seed=2"))
    assert named.label_names == ("W", "S", "B", "T")


def test_missing_files_name_the_folder_and_the_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"'data\.root' = .*none.*train\.csv or test\.csv.*data\.download"):
        ag_news.ag_news_splits(_data(f"data.root={tmp_path / 'none'}"))
    bad = make_ag_news(tmp_path / "bad")
    (bad / "test.csv").write_text('"5","title","text"\n')
    with pytest.raises(ConfigError, match=r"test\.csv row 1 is not 'class index \(1-4\)"):
        ag_news.ag_news_splits(_data(f"data.root={bad}"))


class _FakeSplit:
    """What the loader reads of a ``datasets.Dataset``: columns by name and the label names."""

    def __init__(self, n: int) -> None:
        names = ["World", "Sports", "Business", "Sci/Tech"]
        self.features = {"label": types.SimpleNamespace(names=names)}
        self.columns = {
            "text": [f"story {i}, of class {i % 4}" for i in range(n)],
            "label": [i % 4 for i in range(n)],
        }

    def __getitem__(self, column: str) -> list:
        return self.columns[column]


def test_download_writes_the_pair_once(tmp_path, monkeypatch, capsys):
    """data.download fetches through Hugging Face datasets (faked here) and writes the pair."""
    calls = []

    def load_dataset(name):
        calls.append(name)
        return {"train": _FakeSplit(12), "test": _FakeSplit(8)}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    root = tmp_path / "fetched"
    train, test = ag_news.ag_news_splits(_data(f"data.root={root}", "data.download=true"))
    assert calls == ["ag_news"]
    assert f"downloading AG News through Hugging Face datasets to {root}" in capsys.readouterr().out
    assert (root / "train.csv").is_file() and (root / "classes.txt").is_file()
    assert len(train) == 12 and len(test) == 8 and train.examples[1] == "story 1, of class 1"
    assert train.labels[:4].tolist() == [0, 1, 2, 3]
    monkeypatch.delitem(sys.modules, "datasets")
    again, _ = ag_news.ag_news_splits(_data(f"data.root={root}", "data.split_seed=3"))  # offline now
    assert again.examples == train.examples and calls == ["ag_news"]


def test_tiny_distilbert_has_lora_on_q_lin_and_v_lin_only():
    cfg = tiny_config("data.dataset=ag_news", "model.name=distilbert_tiny").model
    family = model_family("distilbert_tiny")
    assert cfg.target_modules == ("query", "value") and family.lora_targets(cfg) == ("q_lin", "v_lin")
    model = family.build(cfg, 4, seed=0)
    lora = get_adapter(model).lora
    expected = [f"transformer.layer.{i}.attention.{m}" for i in range(2) for m in ("q_lin", "v_lin")]
    assert list(lora) == expected
    assert all(b.shape == (32, 4) and a.shape == (4, 32) for b, a in lora.values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_A." in n or ".lora_B." in n or n.startswith("head.") for n in trainable)
    assert {"head.weight", "head.bias"} <= trainable and len(trainable) == 2 * len(expected) + 2
    assert lora_module_dims(cfg) == [(32, 32)] * 4
    same = family.build(cfg, 4, seed=0)  # seeded: every process builds the same adapter
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    frozen = family.build(tiny_config("model.name=distilbert_tiny", "model.train_head=false").model, 4, 0)
    assert not any(p.requires_grad for p in frozen.head.parameters())
    other = tiny_config("model.name=distilbert_tiny", "model.target_modules=[q_lin,k_lin,lin1]").model
    assert family.lora_targets(other) == ("q_lin", "k_lin", "lin1")  # any other list as given
    assert len(lora_module_dims(other)) == 6


def test_runs_end_to_end_on_ag_news(tmp_path):
    root = make_ag_news(tmp_path / "ag")
    cfg = tiny_config(
        "data.dataset=ag_news", f"data.root={root}", "model.name=distilbert_tiny",
        "data.test_per_class=5", "federation.rounds=2",
    )  # fmt: skip
    check_run(cfg)
    summary = run_serial(cfg, tmp_path / "run")
    assert summary["rounds"] == 2 and 0.0 <= summary["final_test_accuracy"] <= 1.0
    assert (tmp_path / "run" / "summary.json").is_file()
    only_query = tiny_config(
        "data.dataset=ag_news",
        f"data.root={root}",
        "model.name=distilbert_tiny",
        "model.target_modules=[query]",
    )
    with pytest.raises(ConfigError, match=r"'model\.target_modules\[0\]' = 'query'"):
        check_run(only_query)  # only the default pair is mapped to DistilBERT's names


def test_pretrained_distilbert_from_a_local_folder(tmp_path):
    """A folder written by save_pretrained (a tiny random DistilBERT and MiniLM's tokenizer)."""
    family = model_family("distilbert_tiny")
    tiny = tiny_config("model.name=distilbert_tiny").model
    folder = tmp_path / "distilbert"
    family.build_encoder(tiny, seed=0).save_pretrained(folder)  # type: ignore[attr-defined]
    family.load_tokenizer(tiny).save_pretrained(folder)
    cfg = tiny_config("model.name=distilbert", f"model.weights={folder}").model
    pretrained = model_family("distilbert")
    assert pretrained.linear_modules(cfg) == family.linear_modules(tiny)
    assert list(get_adapter(pretrained.build(cfg, 4, seed=0)).lora) == list(
        get_adapter(family.build(tiny, 4, 0)).lora
    )
    assert pretrained.hub_id(cfg) == "distilbert-base-uncased"
    assert (
        len(
            pretrained.prepare(
                cfg, ag_news.ag_news_splits(_data(f"data.root={make_ag_news(tmp_path / 'ag')}"))[1]
            )
        )
        == 20
    )


@pytest.mark.parametrize("weights", ["", "distilbert/distilbert-base-uncased"])
def test_distilbert_offline_without_a_folder_is_a_config_error(weights):
    cfg = tiny_config("model.name=distilbert", f"model.weights={weights}")
    family = model_family("distilbert")
    for step in (lambda: family.linear_modules(cfg.model), lambda: family.build(cfg.model, 4, 0)):
        with pytest.raises(ConfigError, match=r"'model\.weights' = .*offline.*local folder") as err:
            step()
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no hub traceback
    assert family.hub_id(cfg.model) == (weights or "distilbert-base-uncased")


def test_distilbert_weights_that_are_no_folder_or_no_distilbert(tmp_path):
    family = model_family("distilbert")
    cfg = tiny_config("model.name=distilbert", f"model.weights={tmp_path / 'nope'}").model
    with pytest.raises(ConfigError, match=r"'model\.weights' = .*nope.*no such folder"):
        family.linear_modules(cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = tiny_config("model.name=distilbert", f"model.weights={empty}").model
    with pytest.raises(ConfigError, match=r"does not hold a DistilBERT saved with save_pretrained"):
        family.linear_modules(cfg)


def test_distilbert_random_init_is_base_sized_and_offline(tmp_path):
    """model.allow_random_init with no weights: distilbert-base-uncased's shape, random (for
    speed benchmarks), named apart from the pretrained model; preflight stops a run without it."""
    root = make_ag_news(tmp_path / "ag")
    task = ["data.dataset=ag_news", f"data.root={root}", "model.name=distilbert"]
    cfg = tiny_config(*task, "model.allow_random_init=true")
    family = model_family("distilbert")
    dims = lora_module_dims(cfg.model)
    assert dims == [(768, 768)] * 12  # q_lin and v_lin of its 6 layers
    assert family.hub_id(cfg.model) == "distilbert-base-uncased-random-init"
    check_run(cfg)
    with pytest.raises(ConfigError, match=r"'model\.weights' = ''.*local folder"):
        check_run(tiny_config(*task))
