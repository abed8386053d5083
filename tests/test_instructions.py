"""Instruction data (``data.dataset: instructions | wordnet_define``): Alpaca and chat rows, the
column mapping, labels for the partition (natural: one client per value), multiple-choice files
and the WordNet definitions; the driver reads them without torch [docs/algorithms.md §13]."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedlora_ray.components import load_run_config
from fedlora_ray.config import ConfigError
from fedlora_ray.data.instructions import Instruction, load_instructions, load_wordnet_define, read_questions
from fedlora_ray.preflight import check_data

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict], jsonl: bool = True) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows))
    return path


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    return load_run_config(
        None,
        [
            "model.name=causal_lm_tiny",
            "data.dataset=instructions",
            "federation.num_clients=3",
            "federation.clients_per_round=2",
            "runtime.backend=serial",
            *overrides,
        ],
    )


def _users(n: int = 30) -> list[dict]:
    return [
        {
            "instruction": f"say {i}",
            "input": "" if i % 3 else "loudly",
            "output": f"{i}!",
            "user": f"u{i % 3}",
        }
        for i in range(n)
    ]


def test_alpaca_rows_with_a_held_out_share(tmp_path: Path):
    src = _write(tmp_path / "a.jsonl", _users())
    train, test = load_instructions(_cfg(f"data.source={src}", "data.test_fraction=0.2").data)
    assert len(train) == 24 and len(test) == 6
    assert Instruction((("user", "say 0\n\nloudly"),), "0!") in train.examples + test.examples
    assert Instruction((("user", "say 1"),), "1!") in train.examples + test.examples
    seen = {e.response for e in train.examples + test.examples}
    assert seen == {f"{i}!" for i in range(30)}  # every row once, in one split
    assert train.label_names == ("all",) and set(train.labels) == {0}


def test_chat_rows_and_a_column_mapping(tmp_path: Path):
    chat = [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ],
            "kind": "x" if i < 2 else "y",
        }
        for i in range(5)
    ]
    src = _write(tmp_path / "c.json", chat, jsonl=False)
    dolly = [{"instruction": "sum", "context": "2 and 3", "response": "5", "category": "math"}]
    test = _write(tmp_path / "d.jsonl", dolly)
    cfg = _cfg(
        f"data.source={src}",
        f"data.test_source={test}",
        "data.columns=[input=context,output=response]",
        "data.category_column=kind",
        "data.partition=natural",
        "federation.num_clients=2",
    )
    with pytest.raises(ConfigError, match="'data.category_column' = 'kind': row 1 of data.test_source"):
        load_instructions(cfg.data)
    dolly[0]["kind"] = "z"
    _write(tmp_path / "d.jsonl", dolly)
    load_instructions.cache_clear()
    train, held = load_instructions(cfg.data)
    assert train.examples[0] == Instruction((("system", "s"), ("user", "q0")), "a0")
    assert held.examples == (Instruction((("user", "sum\n\n2 and 3"),), "5"),)
    assert train.label_names == ("x", "y", "z") and list(train.labels) == [0, 0, 1, 1, 1]
    assert list(held.labels) == [2]
    parts = check_data(cfg).partition  # natural: one client per value the training rows hold
    assert [list(p) for p in parts] == [[0, 1], [2, 3, 4]]


def test_natural_partition_needs_one_client_per_value(tmp_path: Path):
    src = _write(tmp_path / "u.jsonl", _users())
    cfg = _cfg(f"data.source={src}", "data.category_column=user", "data.partition=natural")
    train, _ = load_instructions(cfg.data)
    parts = check_data(cfg).partition
    assert [sorted({train.label_names[y] for y in train.labels[p]}) for p in parts] == [
        ["u0"],
        ["u1"],
        ["u2"],
    ]
    assert sum(len(p) for p in parts) == 27  # 3 of the 30 rows held out
    with pytest.raises(
        ConfigError, match="'federation.num_clients' = 4: .*natural.* has 3; set federation.num_clients=3"
    ):
        check_data(
            _cfg(
                f"data.source={src}",
                "data.category_column=user",
                "data.partition=natural",
                "federation.num_clients=4",
            )
        )
    with pytest.raises(
        ConfigError, match="'data.partition' = 'natural': .*data.category_column, which is empty"
    ):
        _cfg(f"data.source={src}", "data.partition=natural")


def test_dirichlet_over_a_category_column_follows_the_labels(tmp_path: Path):
    rows = [{"instruction": f"q{i}", "output": "a", "topic": f"t{i % 4}"} for i in range(200)]
    src = _write(tmp_path / "t.jsonl", rows)
    cfg = _cfg(
        f"data.source={src}",
        "data.category_column=topic",
        "data.partition=dirichlet",
        "data.dirichlet_alpha=0.1",
        "federation.num_clients=5",
    )
    train, _ = load_instructions(cfg.data)
    parts = check_data(cfg).partition
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(train)))
    # alpha = 0.1 concentrates each client on few topics: its largest topic holds most of it
    shares = [np.bincount(train.labels[p], minlength=4).max() / len(p) for p in parts]
    assert np.mean(shares) > 0.5


def test_bad_rows_and_files_name_the_field(tmp_path: Path):
    with pytest.raises(ConfigError, match="'data.source' = ''"):
        _cfg()
    missing = tmp_path / "none.jsonl"
    with pytest.raises(ConfigError, match="'data.source' = .*none.jsonl.*no such file"):
        load_instructions(_cfg(f"data.source={missing}").data)
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        load_instructions(_cfg(f"data.source={tmp_path / 'bad.jsonl'}").data)
    src = _write(tmp_path / "q.jsonl", [{"question": "x", "answer": "y"}] * 3)
    with pytest.raises(ConfigError, match="row 1: no 'instruction' and 'output'.*data.columns"):
        load_instructions(_cfg(f"data.source={src}").data)
    chat = _write(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 3)
    with pytest.raises(ConfigError, match="must end with the assistant's turn"):
        load_instructions(_cfg(f"data.source={chat}").data)
    with pytest.raises(ConfigError, match=r"'data.columns\[0\]' = 'reply': must be 'field=column'"):
        _cfg(f"data.source={src}", "data.columns=[reply]")


def test_hub_source_without_the_datasets_package_says_what_to_install(tmp_path: Path):
    pytest.importorskip("fedlora_ray")  # runs where `datasets` is absent (this suite's install)
    try:
        import datasets  # noqa: F401

        pytest.skip("datasets is installed: the hub would be asked")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="'data.source' = 'tatsu-lab/alpaca': .*needs the datasets package"):
        load_instructions(_cfg("data.source=tatsu-lab/alpaca").data)


def test_multiple_choice_answers_as_index_letter_or_text(tmp_path: Path):
    src = _write(
        tmp_path / "mc.jsonl",
        [
            {"question": "a", "choices": ["x", "y", "z"], "answer": 2},
            {"question": "b", "choices": ["x", "y"], "answer": "B"},
            {"question": "c", "choices": ["x", "yes"], "answer": "yes"},
        ],
    )
    assert [q.answer for q in read_questions(str(src))] == [2, 1, 1]
    bad = _write(tmp_path / "bad.jsonl", [{"question": "a", "choices": ["x", "y"], "answer": 5}])
    with pytest.raises(ConfigError, match="'data.mc_source' = .*row 1: answer 5 is not an index below 2"):
        read_questions(str(bad))


def test_wordnet_definitions_and_their_multiple_choice_test():
    cfg = load_run_config(
        None,
        [
            "model.name=causal_lm_tiny",
            "data.dataset=wordnet_define",
            "data.per_class_cap=50",
            "data.test_per_class=5",
            "data.num_categories=4",
            "federation.num_clients=10",
        ],
    )
    train, test = load_wordnet_define(cfg.data)
    assert len(train) == 4 * 45 and len(test) == 4 * 5 and len(test.questions) == 20
    words = [e.prompt[0][1] for e in train.examples + test.examples]
    assert all(w.startswith("Define the word ") and w.endswith(".") for w in words)
    assert len(set(words)) == len(words)  # each word once: one right gloss
    for example, q in zip(test.examples, test.questions, strict=True):
        assert q.question == example.prompt[0][1] and q.choices[q.answer] == example.response
        assert len(q.choices) == 4 and len(set(q.choices)) == 4
    assert np.bincount(train.labels).tolist() == [45] * 4
    assert [q.answer for q in test.questions] != [test.questions[0].answer] * 20  # the right one moves
    again, _ = load_wordnet_define.__wrapped__(cfg.data)  # a fresh draw: a pure function of split_seed
    assert again.examples == train.examples
    with pytest.raises(ConfigError, match="'data.mc_choices' = 26: must be <= the 20 held-out words"):
        load_run_config(None, base=cfg.to_dict(), overrides=["data.mc_choices=26"])


def test_the_driver_reads_instruction_labels_without_torch(tmp_path: Path):
    """The launcher's one read of the data (check_data) parses the rows for their labels; no
    tokenizer, no torch, no transformers."""
    src = _write(tmp_path / "u.jsonl", _users())
    code = (
        "import sys\nfrom fedlora_ray.components import load_run_config\n"
        "from fedlora_ray.preflight import check_data\n"
        "cfg = load_run_config(None, ['model.name=causal_lm', 'data.dataset=instructions',"
        f" 'data.source={src}',"
        " 'data.category_column=user', 'data.partition=natural', 'federation.num_clients=3',"
        " 'federation.clients_per_round=2'])\n"
        "parts = check_data(cfg).partition\nprint(len(parts), sum(len(p) for p in parts))\n"
        "print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["3 27", "[]"], out.stdout + out.stderr  # 3 of 30 held out


def test_llm_quickstart_config_deals_every_client_two_steps_of_words():
    """jobs/configs/llm_quickstart.yaml (make llm): 100 clients of 16 words (2 batches of 8), each
    mostly 2 lexicographer categories; 80 held-out words, each a 4-way question."""
    cfg = load_run_config(ROOT / "jobs" / "configs" / "llm_quickstart.yaml")
    data = check_data(cfg)
    assert [len(p) for p in data.partition] == [16] * 100
    train, test = load_wordnet_define(cfg.data)
    per_client = [len(np.unique(train.labels[p])) for p in data.partition]
    assert max(per_client) <= 3 and np.mean(per_client) <= 2.5
    assert len(test.questions) == 80 and {len(q.choices) for q in test.questions} == {4}
