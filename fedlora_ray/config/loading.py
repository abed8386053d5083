"""Reading a config: YAML plus ``a.b=value`` overrides, coerced to the fields' types, and
validated (ranges, the rules that tie fields together, the registries of schemes, compressors
and controllers), with a message that names the field, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from fedlora_ray.config.fields import WORDNET_NOUN_CATEGORIES, ConfigError, RunConfig


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Turn a YAML value into the field's type, or raise naming the field."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType and set(typing.get_args(hint)) == {int, str}:
        # a number that also takes a word ('auto'); _check_ranges checks which words
        return value if isinstance(value, str) else _coerce(path, value, int)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{path}' = {value!r}: expected a list")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(f"{path}[{i}]", v, item) for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config field '{path}' = {value!r}: expected true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config field '{path}' = {value!r}: expected an integer")
        return value
    if hint is float:
        # PyYAML reads '5e-4' as a string (YAML 1.1), so accept numeric strings here.
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config field '{path}' = {value!r}: expected a number") from None
        if isinstance(value, bool) or not math.isfinite(out):
            raise ConfigError(f"config field '{path}' = {value!r}: expected a finite number")
        return out
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field '{path}' = {value!r}: expected a string")
        return value
    raise TypeError(f"unsupported config type {hint} at {path}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(f"unknown config key {where}; allowed keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        path = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, data[name] or {}, path)  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(path, data[name], hint)
    return cls(**kwargs)


def _check_ranges(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            _check_ranges(value, path)
            continue
        m = f.metadata
        if isinstance(value, str) and m.get("words") is not None:
            if value not in m["words"]:
                allowed = " or ".join([*(repr(w) for w in m["words"]), f"an integer >= {m['ge']}"])
                raise ConfigError(f"config field '{path}' = {value!r}: allowed values are {allowed}")
            continue
        if m.get("choices") is not None and value not in m["choices"]:
            allowed = ", ".join(repr(c) for c in m["choices"])
            raise ConfigError(f"config field '{path}' = {value!r}: allowed values are {allowed}")
        if m.get("ge") is not None and value < m["ge"]:
            raise ConfigError(f"config field '{path}' = {value!r}: must be >= {m['ge']}")
        if m.get("gt") is not None and value <= m["gt"]:
            raise ConfigError(f"config field '{path}' = {value!r}: must be > {m['gt']}")
        if m.get("le") is not None and value > m["le"]:
            raise ConfigError(f"config field '{path}' = {value!r}: must be <= {m['le']}")


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field's range and the rules that tie fields together; return ``cfg``."""
    _check_ranges(cfg)
    fed, data, model = cfg.federation, cfg.data, cfg.model
    if fed.clients_per_round > fed.num_clients:
        raise ConfigError(
            f"config field 'federation.clients_per_round' = {fed.clients_per_round}: must be "
            f"<= federation.num_clients ({fed.num_clients})"
        )
    for i, cat in enumerate(data.categories):
        if cat not in WORDNET_NOUN_CATEGORIES:
            raise ConfigError(
                f"config field 'data.categories[{i}]' = {cat!r}: allowed values are the WordNet "
                f"noun categories {', '.join(WORDNET_NOUN_CATEGORIES)}"
            )
    if data.num_categories > len(data.categories):
        raise ConfigError(
            f"config field 'data.num_categories' = {data.num_categories}: must be <= the "
            f"{len(data.categories)} entries of data.categories"
        )
    if len(set(data.categories)) != len(data.categories):
        raise ConfigError(f"config field 'data.categories' = {list(data.categories)}: repeats a name")
    if data.dataset == "wordnet" and data.test_per_class >= data.per_class_cap:
        raise ConfigError(
            f"config field 'data.test_per_class' = {data.test_per_class}: must be < "
            f"data.per_class_cap ({data.per_class_cap}) so that training data remains"
        )
    if data.dataset == "wordnet" and not (Path(data.wordnet_dir) / "data.noun").is_file():
        raise ConfigError(
            f"config field 'data.wordnet_dir' = {data.wordnet_dir!r}: no data.noun there "
            "(install Debian's wordnet-base, or point this at a WordNet 3.0 dict folder)"
        )
    if cfg.channel.distance_min_m > cfg.channel.distance_max_m:
        raise ConfigError(
            f"config field 'channel.distance_min_m' = {cfg.channel.distance_min_m}: must be <= "
            f"channel.distance_max_m ({cfg.channel.distance_max_m})"
        )
    if not model.target_modules:
        raise ConfigError("config field 'model.target_modules' = []: name at least one module")
    _validate_schemes(cfg)
    if cfg.runtime.num_gpus_per_actor > 1 and cfg.runtime.num_gpus_per_actor != int(
        cfg.runtime.num_gpus_per_actor
    ):
        raise ConfigError(
            f"config field 'runtime.num_gpus_per_actor' = {cfg.runtime.num_gpus_per_actor}: "
            "above 1 it must be a whole number"
        )
    return cfg


def validate_ratios(path: str, ratios: tuple[float, ...], rank: int) -> None:
    if not ratios:
        raise ConfigError(f"config field '{path}' = []: give at least one ratio in (0, 1]")
    for i, x in enumerate(ratios):
        if not 0 < x <= 1:
            raise ConfigError(f"config field '{path}[{i}]' = {x}: must be in (0, 1]")
        if round(x * rank) < 1:
            raise ConfigError(
                f"config field '{path}[{i}]' = {x}: x * model.lora_rank ({rank}) rounds to 0 "
                "components; use a larger ratio or rank"
            )


def _validate_schemes(cfg: RunConfig) -> None:
    """Rules tying the algorithm, sampling and controller sections together: each scheme and
    controller checks what it needs; the registries say which names exist."""
    from fedlora_ray.algorithm.schemes import SCHEMES, scheme_class
    from fedlora_ray.compress import COMPRESSORS, compressor
    from fedlora_ray.control import CONTROLLERS, controller_class
    from fedlora_ray.tasks import DATASETS, MODELS, dataset_modality, model_family

    alg, ctl, samp = cfg.algorithm, cfg.controller, cfg.sampling
    for path, name, table, lookup in (
        ("data.dataset", cfg.data.dataset, DATASETS, dataset_modality),
        ("model.name", cfg.model.name, MODELS, model_family),
        ("algorithm.kind", alg.kind, SCHEMES, scheme_class),
        ("compression.method", cfg.compression.method, COMPRESSORS, compressor),
        ("controller.kind", ctl.kind, CONTROLLERS, controller_class),
    ):
        try:
            lookup(name)
        except KeyError:
            allowed = ", ".join(repr(n) for n in table)
            raise ConfigError(f"config field '{path}' = {name!r}: allowed values are {allowed}") from None
    takes, holds = model_family(cfg.model.name).modality, dataset_modality(cfg.data.dataset)
    if takes != holds:
        raise ConfigError(
            f"config field 'model.name' = {cfg.model.name!r}: a {takes} model cannot train on "
            f"data.dataset = {cfg.data.dataset!r}, which holds {holds}"
        )
    scheme_class(alg.kind).validate(cfg)
    controller_class(ctl.kind).validate(cfg)
    if samp.q_min > samp.q_max:
        raise ConfigError(
            f"config field 'sampling.q_min' = {samp.q_min}: must be <= sampling.q_max ({samp.q_max})"
        )
    n, k = cfg.federation.num_clients, cfg.federation.clients_per_round
    if samp.kind == "independent" and not samp.q_min * n <= k <= samp.q_max * n:
        raise ConfigError(
            f"config field 'federation.clients_per_round' = {k}: with independent sampling the "
            f"expected number of participants must lie in [q_min N, q_max N] = "
            f"[{samp.q_min * n:g}, {samp.q_max * n:g}]"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (['a', 'b'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected the form section.field=value")
    key, raw = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {text!r}: empty field name")
    return keys, yaml.safe_load(raw) if raw.strip() else ""


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: typing.Sequence[str] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Read a YAML file (or start from ``base``), apply overrides, build and validate."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {yaml_error_text(err)}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top")
        data = _merge(data, loaded)
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {text!r}: the value is not valid YAML: {yaml_error_text(err)}"
            ) from None
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            node[k] = dict(nxt) if isinstance(nxt, dict) else {}
            node = node[k]
        node[keys[-1]] = value
    return validate(_build(RunConfig, data, ""))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def replace(cfg: RunConfig, *overrides: str) -> RunConfig:
    """A copy of ``cfg`` with ``a.b=value`` overrides applied and validated."""
    return load_config(None, overrides, base=cfg.to_dict())


def help_table(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, default, help) for every leaf field: the source of the docs."""
    rows: list[tuple[str, Any, str]] = []
    inst = cls()
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(inst, f.name)
        if dataclasses.is_dataclass(value):
            rows += help_table(type(value), path)
        else:
            rows.append((path, value, f.metadata.get("help", "")))
    return rows


def yaml_error_text(err: yaml.YAMLError) -> str:
    """A YAML error as one line, 1-based line and column first, without PyYAML's excerpt."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and cmark is not None:
        problem += f" ({context} at line {cmark.line + 1}, column {cmark.column + 1})"
    return where + problem
