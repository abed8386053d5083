"""Config: YAML + overrides build one frozen tree; bad values stop the run with a clear error.

``fedlora_ray.config`` checks what the config alone can tell; ``fedlora_ray.components``
(``load_run_config``) also checks the component names and each component's own rules."""

import dataclasses
import subprocess
import sys

import pytest

from fedlora_ray.components import load_run_config
from fedlora_ray.config import ConfigError, RunConfig, help_table, load_config, parse_override, replace
from fedlora_ray.preflight import check_run
from tests.conftest import ROOT, tiny_config


def test_defaults_are_valid_and_frozen():
    cfg = load_run_config()
    assert cfg == RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.federation.rounds = 3  # type: ignore[misc]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("federation:\n  rounds: 7\n  lr: 5e-4\nmodel:\n  target_modules: [query]\n")
    cfg = load_config(path, ["federation.rounds=9", "data.partition=iid"])
    assert cfg.federation.rounds == 9  # override wins over the file
    assert cfg.federation.lr == pytest.approx(5e-4)  # YAML 1.1 reads 5e-4 as a string
    assert cfg.model.target_modules == ("query",)
    assert cfg.data.partition == "iid"
    assert cfg.model.lora_rank == 8  # untouched default


def test_replace_and_roundtrip_through_dict():
    cfg = replace(tiny_config(), "federation.seed=5")
    assert cfg.federation.seed == 5
    assert load_config(None, base=cfg.to_dict()) == cfg


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[x, y]") == (["a"], ["x", "y"])
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("nonsense")


def test_every_field_has_help():
    rows = help_table()
    assert len(rows) > 30
    assert all(text for _, _, text in rows), [n for n, _, t in rows if not t]


def test_shipped_configs_are_valid():
    for path in sorted((ROOT / "jobs" / "configs").glob("**/*.yaml")):  # paper/ too
        load_run_config(path)


def test_the_config_alone_is_plain_data_and_the_composition_root_checks_the_components():
    # config knows no registry: any name passes its own rules, and WordNet's rules are WordNet's
    cfg = load_config(None, ["controller.kind=nosuch", "data.wordnet_dir=/no/such/dir"])
    assert cfg.controller.kind == "nosuch"
    with pytest.raises(ConfigError, match="'controller.kind' = 'nosuch': allowed values are 'equal', 'fi"):
        load_run_config(None, ["controller.kind=nosuch"])
    with pytest.raises(ConfigError, match="'data.wordnet_dir' = '/no/such/dir': no data.noun"):
        load_run_config(None, ["data.wordnet_dir=/no/such/dir"])
    # WordNet's rules apply to WordNet only
    assert load_run_config(None, ["data.dataset=ag_news", "data.categories=[dragons]"]).data.categories == (
        "dragons",
    )


def test_loading_and_validating_a_config_imports_neither_torch_nor_transformers():
    """The launcher checks a config in a fresh interpreter without the seconds and the hundreds
    of MB that torch and transformers cost: the registries hold light entries."""
    code = (
        "import sys\n"
        "from fedlora_ray.components import load_run_config, registered_names\n"
        "load_run_config('jobs/configs/quickstart.yaml', ['controller.kind=tsfa', 'compression.method=soft'])"
        "\n"
        "load_run_config(None, ['data.dataset=cifar100', 'model.name=vit_b16', 'algorithm.kind=fslora'])\n"
        "assert registered_names()['model.name']\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'timm') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


BAD = [
    # (override, the field named in the message, a fragment of what is allowed)
    ("model.lora_rank=-1", "model.lora_rank", ">= 1"),
    ("model.lora_rank=0", "model.lora_rank", ">= 1"),
    ("federation.clients_per_round=200", "federation.clients_per_round", "<= federation.num_clients"),
    ("foo.bar=1", "foo", "allowed keys"),
    ("federation.not_a_field=1", "federation.not_a_field", "allowed keys here"),
    ("data.wordnet_dir=/no/such/dir", "data.wordnet_dir", "no data.noun"),
    ("data.partition=random", "data.partition", "'iid', 'shards', 'dirichlet'"),
    ("model.name=gpt9", "model.name", "'minilm', 'tiny'"),
    ("federation.lr=fast", "federation.lr", "expected a number"),
    ("federation.lr=0", "federation.lr", "> 0"),
    ("federation.rounds=2.5", "federation.rounds", "expected an integer"),
    ("federation.rounds=true", "federation.rounds", "expected an integer"),
    ("runtime.num_gpus_per_actor=-0.5", "runtime.num_gpus_per_actor", ">= 0"),
    ("runtime.num_gpus_per_actor=1.5", "runtime.num_gpus_per_actor", "whole number"),
    ("data.num_categories=12", "data.num_categories", "<= the 8 entries"),
    ("data.categories=[animal, dragons]", "data.categories[1]", "WordNet noun categories"),
    ("data.test_per_class=600", "data.test_per_class", "< data.per_class_cap"),
    ("data.dirichlet_alpha=0", "data.dirichlet_alpha", "> 0"),
    ("runtime.progress=maybe", "runtime.progress", "true or false"),
    ("model.lora_dropout=0.95", "model.lora_dropout", "<= 0.9"),
    ("model.target_modules=[]", "model.target_modules", "at least one"),
    ("federation=3", "federation", "must be a mapping"),
    ("federation.seed=-1", "federation.seed", ">= 0"),  # numpy seeds are non-negative
]


@pytest.mark.parametrize(("override", "field", "allowed"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_names_field_value_and_range(override, field, allowed):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, [override])
    message = str(err.value)
    assert f"'{field}'" in message
    assert allowed in message


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("federation:\n  rounds: 3\n  lr: [0.1, 0.2\nmodel:\n  name: tiny\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "not valid YAML" in message
    assert "line 4, column 6" in message  # where PyYAML found the unclosed list's end
    assert "Traceback" not in message and "\n" not in message


def test_malformed_override_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.target_modules=\[nosuch'.*not valid YAML"):
        load_config(None, ["model.target_modules=[nosuch"])


# Checks against the base model's modules and the training data (fedlora_ray.preflight), on
# the tiny model: (overrides, "'field' = value" as the message shows it, a fragment of what is
# allowed).
PREFLIGHT_BAD = [
    (["model.target_modules=[nosuch]"], "'model.target_modules[0]' = 'nosuch'", "'query', 'key', 'value'"),
    (["model.target_modules=[query, attention.nosuch]"], "'model.target_modules[1]' = 'attention.nosuch'",
     "'query'"),
    (["federation.num_clients=100000"], "'federation.num_clients' = 100000",
     "<= 120: with data.min_examples_per_client = 1 and data.partition = 'shards'"),
    (["model.lora_rank=65"], "'model.lora_rank' = 65", "<= 64, the smallest dimension"),
    (["model.target_modules=[intermediate.dense]", "model.lora_rank=65"], "'model.lora_rank' = 65", "<= 64"),
    # TSFA picks the rank in 1..controller.max_rank, so max_rank is what must fit
    (["controller.kind=tsfa", "compression.method=soft", "controller.max_rank=65"],
     "'controller.max_rank' = 65", "<= 64"),
    (["federation.num_clients=200", "data.shards_per_client=3"], "'federation.num_clients' = 200",
     "<= 80: "),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "field_value", "allowed"), PREFLIGHT_BAD, ids=[" ".join(b[0]) for b in PREFLIGHT_BAD]
)
def test_preflight_names_field_value_and_limit(overrides, field_value, allowed):
    cfg = tiny_config(*overrides)  # every field is valid on its own
    with pytest.raises(ConfigError) as err:
        check_run(cfg)
    assert field_value in str(err.value)
    assert allowed in str(err.value)


def test_preflight_accepts_good_configs():
    check_run(tiny_config())
    check_run(tiny_config("model.lora_rank=64", "model.target_modules=[self.query, dense]"))
    # TSFA replaces lora_rank by its offline choice, so only controller.max_rank must fit
    check_run(tiny_config("controller.kind=tsfa", "compression.method=soft", "model.lora_rank=100"))
