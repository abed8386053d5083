"""peft LoRA on the tiny model: what trains, moving the adapter in and out, peft's format."""

import json
import warnings

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from fedlora_ray.lora import build_model, get_adapter, save_adapter, set_adapter
from fedlora_ray.lora.adapter import Adapter, lora_parameters
from fedlora_ray.lora.model import MINILM_HUB_ID, build_encoder
from fedlora_ray.tasks import lora_module_dims, model_family
from fedlora_ray.tasks.base import targets
from tests.conftest import tiny_config


def test_only_lora_and_head_train():
    cfg = tiny_config("model.target_modules=[query, value]")
    model = build_model(cfg.model, 5, seed=0, pretrained=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or n.startswith("head.") for n in trainable)
    lora = lora_parameters(model)
    assert len(lora) == 2 * cfg.model.tiny_layers  # query and value in every layer
    b, a = next(iter(lora.values()))
    assert b.shape == (cfg.model.tiny_hidden, 4) and a.shape == (4, cfg.model.tiny_hidden)
    assert torch.count_nonzero(b) == 0 and torch.count_nonzero(a) > 0  # B starts at zero


def test_frozen_head_is_not_part_of_the_adapter():
    model = build_model(tiny_config("model.train_head=false").model, 5, seed=0, pretrained=False)
    assert get_adapter(model).head == {}
    assert not any(p.requires_grad for p in model.head.parameters())


def test_init_is_a_function_of_the_seed():
    cfg = tiny_config().model
    a, b, c = (get_adapter(build_model(cfg, 5, seed=s, pretrained=False)) for s in (0, 0, 1))
    first = next(iter(a.lora))
    assert torch.equal(a.lora[first][1], b.lora[first][1])
    assert not torch.equal(a.lora[first][1], c.lora[first][1])


def test_set_then_get_round_trips():
    model = build_model(tiny_config().model, 5, seed=0, pretrained=False)
    adapter = get_adapter(model)
    for bm, am in adapter.lora.values():
        bm.normal_()
        am.normal_()
    adapter.head["weight"].normal_()
    set_adapter(model, adapter)
    back = get_adapter(model)
    assert all(torch.equal(back.lora[m][0], adapter.lora[m][0]) for m in adapter.lora)
    assert torch.equal(back.head["weight"], adapter.head["weight"])


def test_saved_adapter_loads_with_peft(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg.model, 5, seed=0, pretrained=False)
    adapter = get_adapter(model)
    for bm, am in adapter.lora.values():
        bm.uniform_()
        am.uniform_()
    out = save_adapter(adapter, cfg.model, ("a", "b", "c", "d", "e"), tmp_path / "adapter")
    assert not (tmp_path / "adapter.tmp").exists()
    loaded = PeftModel.from_pretrained(build_encoder(cfg.model, seed=0, pretrained=False), str(out))
    params = dict(loaded.named_parameters())
    for module, (bm, am) in adapter.lora.items():
        assert torch.equal(params[f"base_model.model.{module}.lora_B.default.weight"], bm)
        assert torch.equal(params[f"base_model.model.{module}.lora_A.default.weight"], am)
    assert json.loads((out / "labels.json").read_text()) == ["a", "b", "c", "d", "e"]
    assert torch.equal(load_file(str(out / "classifier.safetensors"))["weight"], adapter.head["weight"])


def test_adapter_config_names_the_hub_model_not_a_local_path(tmp_path):
    # pretrained or not is the family's fact, not a test of its name
    assert model_family("minilm").hub_id(tiny_config("model.name=minilm").model) == MINILM_HUB_ID
    assert model_family("tiny").hub_id(tiny_config().model) == "tiny-bert-h64-l2"
    cfg = tiny_config()
    out = save_adapter(
        get_adapter(build_model(cfg.model, 5, seed=0, pretrained=False)),
        cfg.model,
        tuple("abcde"),
        tmp_path / "a",
    )
    assert (
        json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-bert-h64-l2"
    )


def test_target_names_match_as_peft_matches_them():
    assert targets("encoder.layer.0.attention.self.query", ("value", "query")) == "query"
    assert targets("encoder.layer.0.attention.self.query", ("self.query",)) == "self.query"
    assert targets("encoder.layer.0.attention.self.query", ("uery",)) is None
    cfg = tiny_config("model.target_modules=[intermediate.dense, value]").model
    assert sorted(set(lora_module_dims(cfg))) == [(64, 64), (128, 64)]  # (out, in) per module


def test_building_the_model_prints_no_warnings_or_progress_bars():
    from transformers.utils import logging as hf_logging

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(tiny_config().model, 5, seed=0, pretrained=False)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.get_verbosity() == hf_logging.ERROR


def test_load_classifier_from_a_run_directory(tmp_path):
    from fedlora_ray import load_classifier
    from fedlora_ray.data import load_wordnet
    from fedlora_ray.engine.serial import run_serial
    from fedlora_ray.tasks.bert import tokenize

    cfg = tiny_config("federation.rounds=2")
    run_dir = tmp_path / "run"
    run_serial(cfg, run_dir)
    clf = load_classifier(run_dir)
    labels = json.loads((run_dir / "adapter" / "labels.json").read_text())
    assert list(clf.label_names) == labels and not clf.model.training

    # the reference: a fresh model of the run's config with the saved tensors set directly
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    lora = {
        key.removeprefix("base_model.model.").removesuffix(".lora_B.weight"): (
            saved[key], saved[key.replace("lora_B", "lora_A")]
        )
        for key in saved if key.endswith(".lora_B.weight")
    }  # fmt: skip
    head = load_file(str(run_dir / "adapter" / "classifier.safetensors"))
    reference = build_model(cfg.model, len(labels), cfg.federation.seed, pretrained=False)
    set_adapter(reference, Adapter(lora, head))
    initial = get_adapter(build_model(cfg.model, len(labels), cfg.federation.seed, pretrained=False))
    first = next(iter(lora))
    assert not torch.equal(lora[first][0], initial.lora[first][0])  # the run did train B

    _, test = load_wordnet(cfg.data)
    texts = list(test.texts[:6])
    data = tokenize(clf.tokenizer, tuple(texts), test.labels[:6], cfg.model.max_length)
    with torch.no_grad():
        expected = reference(data.input_ids, data.attention_mask)
    logits = clf.logits(texts)
    assert logits.shape == (6, len(labels))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    predicted = clf.predict(texts)
    assert predicted == [labels[i] for i in expected.argmax(-1).tolist()]
    assert set(predicted) <= set(labels)


def test_load_classifier_without_an_adapter_says_so(tmp_path):
    from fedlora_ray import load_classifier

    (tmp_path / "config.json").write_text(tiny_config().to_json())
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors not found"):
        load_classifier(tmp_path)
