"""Instruction data for causal language models [docs/algorithms.md §13].

- ``read_instructions``: local JSON or JSONL (or a Hugging Face dataset) in Alpaca form
  (instruction, input, output) or chat form (messages), with a column mapping
  (``data.columns``) and a label column (``data.category_column``) for the partition.
- ``read_questions``: multiple-choice questions (question, choices, answer), scored by
  log-likelihood.
- ``wordnet_define``: the offline default, built from WordNet 3.0 nouns: "Define the word X."
  answered by the synset's gloss, labelled by lexicographer category, and a held-out
  multiple-choice test (the right gloss among ``data.mc_choices``).

Plain Python and numpy: the driver reads these for the labels its partition needs; only client
actors tokenise (``fedlora_ray.tasks.causal_lm``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedlora_ray.config import ConfigError, DataConfig
from fedlora_ray.data.wordnet import WORDNET_NOUN_CATEGORIES, clean_gloss, split_by_category

FIELDS = ("instruction", "input", "output", "messages")  # what data.columns may map
ROLES = ("system", "user", "assistant")
SINGLE_LABEL = "all"  # the label name when data.category_column is empty


@dataclass(frozen=True)
class Instruction:
    """One example: the turns before the response as (role, content) pairs, and the response the
    model learns (the loss covers its tokens only)."""

    prompt: tuple[tuple[str, str], ...]
    response: str


@dataclass(frozen=True)
class MultipleChoice:
    """A question, its choices, and the index of the right one."""

    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class InstructionSet:
    """The examples of one split, their labels (``label_names[y]`` names label y), and for a
    test split its multiple-choice questions."""

    examples: tuple[Instruction, ...]
    labels: np.ndarray
    label_names: tuple[str, ...]
    questions: tuple[MultipleChoice, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.examples)


def _error(path: str, value: Any, what: str) -> ConfigError:
    return ConfigError(f"config field '{path}' = {value!r}: {what}")


def column_map(cfg: DataConfig) -> dict[str, str]:
    """``data.columns`` as field -> column; every field not named reads the column of its own
    name. ConfigError on an entry that is not 'field=column' with a known field."""
    out = {f: f for f in FIELDS}
    for i, entry in enumerate(cfg.columns):
        name, eq, column = entry.partition("=")
        if not eq or name.strip() not in FIELDS or not column.strip():
            raise _error(
                f"data.columns[{i}]", entry, f"must be 'field=column' with field one of {', '.join(FIELDS)}"
            )
        out[name.strip()] = column.strip()
    return out


def _is_file_source(source: str) -> bool:
    return source.endswith((".json", ".jsonl")) or Path(source).expanduser().exists()


def _read_json_file(path: str, file: Path) -> list[dict[str, Any]]:
    """The rows of a .jsonl file (one object per line) or a .json file (a list of objects)."""
    if not file.is_file():
        raise _error(path, str(file), "no such file")
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise _error(path, str(file), f"line {n} is not JSON ({err.msg})") from None
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise _error(path, str(file), f"not JSON (line {err.lineno}: {err.msg})") from None
        if not isinstance(rows, list):
            raise _error(path, str(file), "a .json file must hold a list of objects (rows)")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise _error(path, str(file), f"row {n} is not an object")
    return rows


def _read_hub(path: str, source: str, split: str) -> list[dict[str, Any]]:
    """A Hugging Face dataset's split as rows (needs the datasets package, and internet unless
    the dataset is in the local cache)."""
    try:
        import datasets  # an optional dependency: only hub sources need it
    except ImportError:
        raise _error(
            path, source, "reading a hub dataset needs the datasets package (pip install datasets)"
        ) from None
    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as err:  # offline, no such dataset or split: the hub's many error types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise _error(
            path,
            source,
            f"could not load split {split!r} from the Hugging Face hub ({reason}); offline, "
            "give a local .json or .jsonl file",
        ) from None
    return [dict(r) for r in ds]


def read_rows(path: str, source: str, default_split: str) -> list[dict[str, Any]]:
    """The rows of ``source`` (the value of config field ``path``): a local .json/.jsonl file, or
    a hub id with an optional ':split'."""
    if _is_file_source(source):
        return _read_json_file(path, Path(source).expanduser())
    name, _, split = source.partition(":")
    return _read_hub(path, name, split or default_split)


def _text(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def to_instruction(row: dict[str, Any], columns: dict[str, str], where: str) -> Instruction:
    """A row in chat form (a messages list ending with the assistant's turn) or Alpaca form
    (instruction, optional input, output). Alpaca's input follows the instruction after a blank
    line, as Alpaca's own prompt puts it [ours: no template words]."""
    messages = row.get(columns["messages"])
    if messages is not None:
        turns = []
        for m in messages:
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError(f"{where}: each message needs a role ({', '.join(ROLES)}) and content")
            turns.append((role, m["content"]))
        if len(turns) < 2 or turns[-1][0] != "assistant":
            raise ValueError(f"{where}: the messages must end with the assistant's turn, after a prompt")
        return Instruction(tuple(turns[:-1]), turns[-1][1])
    instruction, output = _text(row, columns["instruction"]), _text(row, columns["output"])
    if not instruction or columns["output"] not in row:
        raise ValueError(
            f"{where}: no {columns['instruction']!r} and {columns['output']!r} (Alpaca form) and no "
            f"{columns['messages']!r} (chat form); name the columns with data.columns"
        )
    extra = _text(row, columns["input"]).strip()
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return Instruction((("user", prompt),), output)


def _convert(
    path: str, source: str, rows: list[dict[str, Any]], columns: dict[str, str]
) -> tuple[Instruction, ...]:
    try:
        return tuple(to_instruction(r, columns, f"row {n}") for n, r in enumerate(rows, 1))
    except ValueError as err:
        raise _error(path, source, str(err)) from None


def _labels(rows: Sequence[dict[str, Any]], column: str, path: str, source: str) -> tuple[list[str], str]:
    if not column:
        return [SINGLE_LABEL] * len(rows), ""
    missing = next((n for n, r in enumerate(rows, 1) if column not in r), None)
    if missing is not None:
        known = ", ".join(sorted(rows[missing - 1]))
        raise _error(
            "data.category_column",
            column,
            f"row {missing} of {path} {source!r} has no such column (it has {known})",
        )
    return [str(r[column]) for r in rows], column


def _encode(values: Iterable[str], names: tuple[str, ...]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    out = np.fromiter((index[v] for v in values), dtype=np.int64)
    out.setflags(write=False)  # cached and shared: nobody may change it
    return out


@functools.lru_cache(maxsize=4)
def load_instructions(cfg: DataConfig) -> tuple[InstructionSet, InstructionSet]:
    """The (train, test) instruction sets of ``data.source`` (and ``data.test_source``, or a
    held-out ``data.test_fraction`` drawn with ``data.split_seed``), with the questions of
    ``data.mc_source`` on the test set. Labels are the values of ``data.category_column``, named
    in sorted order (the test set's values that training lacks are added after them)."""
    if not cfg.source:
        raise _error("data.source", cfg.source, "data.dataset = 'instructions' needs a file or a hub id")
    columns = column_map(cfg)
    rows = read_rows("data.source", cfg.source, "train")
    if not rows:
        raise _error("data.source", cfg.source, "holds no rows")
    if cfg.test_source:
        test_rows = read_rows("data.test_source", cfg.test_source, "test")
        train_rows = rows
    else:
        order = np.random.default_rng(cfg.split_seed).permutation(len(rows))
        held = max(1, int(round(cfg.test_fraction * len(rows))))
        if held >= len(rows):
            raise _error("data.test_fraction", cfg.test_fraction, f"leaves no training rows of {len(rows)}")
        test_rows = [rows[i] for i in np.sort(order[:held])]
        train_rows = [rows[i] for i in np.sort(order[held:])]
    train_values, _ = _labels(train_rows, cfg.category_column, "data.source", cfg.source)
    test_values, _ = _labels(
        test_rows, cfg.category_column, "data.test_source", cfg.test_source or cfg.source
    )
    names = tuple(sorted(set(train_values)))
    names += tuple(sorted(set(test_values) - set(names)))
    questions = read_questions(cfg.mc_source) if cfg.mc_source else ()
    return (
        InstructionSet(
            _convert("data.source", cfg.source, train_rows, columns), _encode(train_values, names), names
        ),
        InstructionSet(
            _convert(
                "data.test_source" if cfg.test_source else "data.source",
                cfg.test_source or cfg.source,
                test_rows,
                columns,
            ),
            _encode(test_values, names),
            names,
            questions,
        ),
    )


def _answer_index(answer: Any, choices: Sequence[str]) -> int | None:
    """An answer given as an index, a letter (A, B, ...) or the right choice's text."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer if 0 <= answer < len(choices) else None
    if isinstance(answer, str):
        text = answer.strip()
        if len(text) == 1 and text.isalpha() and ord(text.upper()) - ord("A") < len(choices):
            return ord(text.upper()) - ord("A")
        if text in choices:
            return list(choices).index(text)
        if text.isdigit() and int(text) < len(choices):
            return int(text)
    return None


@functools.lru_cache(maxsize=4)
def read_questions(source: str) -> tuple[MultipleChoice, ...]:
    """``data.mc_source``: rows of question, choices (a list of at least 2 strings) and answer."""
    rows = _read_json_file("data.mc_source", Path(source).expanduser())
    out = []
    for n, row in enumerate(rows, 1):
        choices = row.get("choices")
        if (
            not isinstance(row.get("question"), str)
            or not isinstance(choices, list)
            or len(choices) < 2
            or not all(isinstance(c, str) for c in choices)
        ):
            raise _error(
                "data.mc_source",
                source,
                f"row {n} needs a question (text) and choices (a list of 2 or more texts)",
            )
        answer = _answer_index(row.get("answer"), choices)
        if answer is None:
            raise _error(
                "data.mc_source",
                source,
                f"row {n}: answer {row.get('answer')!r} is not an index below {len(choices)}, a letter "
                "or one of the choices",
            )
        out.append(MultipleChoice(row["question"], tuple(choices), answer))
    return tuple(out)


# --- WordNet definitions: the offline default ----------------------------------------------------

_FIRST_NOUN_LEXFILE = 3  # lex_filenum 03 is noun.Tops (lexnames(5WN))
DEFINE = "Define the word {word}."


@functools.lru_cache(maxsize=2)
def read_noun_words(wordnet_dir: str) -> dict[str, list[tuple[str, str]]]:
    """Each noun category -> its (word, cleaned gloss) pairs in file order: a synset's first word
    (underscores read as spaces), kept only when no other noun synset starts with the same word,
    so that "Define the word X." has one right answer (data.noun's format: wndb(5WN))."""
    entries: list[tuple[str, str, str]] = []
    with open(Path(wordnet_dir) / "data.noun", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            text = clean_gloss(gloss)
            if text:
                category = WORDNET_NOUN_CATEGORIES[int(fields[1]) - _FIRST_NOUN_LEXFILE]
                entries.append((category, fields[4].replace("_", " "), text))
    counts: dict[str, int] = {}
    for _, word, _ in entries:
        counts[word.lower()] = counts.get(word.lower(), 0) + 1
    out: dict[str, list[tuple[str, str]]] = {}
    for category, word, text in entries:
        if counts[word.lower()] == 1:
            out.setdefault(category, []).append((word, text))
    return out


def _define(word: str, gloss: str) -> Instruction:
    return Instruction((("user", DEFINE.format(word=word)),), gloss)


@functools.lru_cache(maxsize=4)
def load_wordnet_define(cfg: DataConfig) -> tuple[InstructionSet, InstructionSet]:
    """Per category (the first ``num_categories`` of ``categories``), ``per_class_cap`` words
    drawn with ``split_seed``, the first ``test_per_class`` held out, as ``load_wordnet`` splits
    glosses. Every held-out word is also a question: its gloss among ``mc_choices`` glosses, the
    others drawn from the other held-out words (any category) with ``[split_seed, 0x3C]``."""
    names = tuple(cfg.categories[: cfg.num_categories])
    train_items, test_items = split_by_category(read_noun_words(cfg.wordnet_dir), names, cfg, "words")
    train = [(*item, label) for item, label in train_items]
    test = [(*item, label) for item, label in test_items]
    if len(test) < cfg.mc_choices:
        raise ValueError(f"{len(test)} held-out words cannot fill data.mc_choices = {cfg.mc_choices} choices")
    draw = np.random.default_rng([cfg.split_seed, 0x3C])
    questions = []
    for q, (word, gloss, _) in enumerate(test):
        others = draw.choice(len(test) - 1, cfg.mc_choices - 1, replace=False)
        wrong = [test[j + (j >= q)][1] for j in others]  # every held-out word but q itself
        answer = int(draw.integers(cfg.mc_choices))
        questions.append(
            MultipleChoice(DEFINE.format(word=word), tuple(wrong[:answer] + [gloss] + wrong[answer:]), answer)
        )
    return (
        InstructionSet(
            tuple(_define(w, g) for w, g, _ in train), _encode((names[y] for *_, y in train), names), names
        ),
        InstructionSet(
            tuple(_define(w, g) for w, g, _ in test),
            _encode((names[y] for *_, y in test), names),
            names,
            tuple(questions),
        ),
    )
