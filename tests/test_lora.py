"""peft LoRA on the tiny model: what trains, moving the adapter in and out, peft's format."""

import json

import torch
from peft import PeftModel
from safetensors.torch import load_file

from fedlora_ray.lora import build_model, get_adapter, save_adapter, set_adapter
from fedlora_ray.lora.adapter import lora_parameters
from fedlora_ray.lora.model import build_encoder
from tests.conftest import tiny_config


def test_only_lora_and_head_train():
    cfg = tiny_config("model.target_modules=[query, value]")
    model = build_model(cfg.model, 5, seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or n.startswith("head.") for n in trainable)
    lora = lora_parameters(model)
    assert len(lora) == 2 * cfg.model.tiny_layers  # query and value in every layer
    b, a = next(iter(lora.values()))
    assert b.shape == (cfg.model.tiny_hidden, 4) and a.shape == (4, cfg.model.tiny_hidden)
    assert torch.count_nonzero(b) == 0 and torch.count_nonzero(a) > 0  # B starts at zero


def test_frozen_head_is_not_part_of_the_adapter():
    model = build_model(tiny_config("model.train_head=false").model, 5, seed=0)
    assert get_adapter(model).head == {}
    assert not any(p.requires_grad for p in model.head.parameters())


def test_init_is_a_function_of_the_seed():
    cfg = tiny_config().model
    a, b, c = (get_adapter(build_model(cfg, 5, seed=s)) for s in (0, 0, 1))
    first = next(iter(a.lora))
    assert torch.equal(a.lora[first][1], b.lora[first][1])
    assert not torch.equal(a.lora[first][1], c.lora[first][1])


def test_set_then_get_round_trips():
    model = build_model(tiny_config().model, 5, seed=0)
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
    model = build_model(cfg.model, 5, seed=0)
    adapter = get_adapter(model)
    for bm, am in adapter.lora.values():
        bm.uniform_()
        am.uniform_()
    out = save_adapter(adapter, cfg.model, ("a", "b", "c", "d", "e"), tmp_path / "adapter")
    assert not (tmp_path / "adapter.tmp").exists()
    loaded = PeftModel.from_pretrained(build_encoder(cfg.model, seed=0), str(out))
    params = dict(loaded.named_parameters())
    for module, (bm, am) in adapter.lora.items():
        assert torch.equal(params[f"base_model.model.{module}.lora_B.default.weight"], bm)
        assert torch.equal(params[f"base_model.model.{module}.lora_A.default.weight"], am)
    assert json.loads((out / "labels.json").read_text()) == ["a", "b", "c", "d", "e"]
    assert torch.equal(load_file(str(out / "classifier.safetensors"))["weight"], adapter.head["weight"])
