"""Reading a config: YAML plus ``a.b=value`` overrides, coerced to the fields' types, and
validated by the rules that read only the config (types, ranges, the rules that tie fields
together), with a message that names the field, the value and what is allowed.

The names of components (schemes, compressors, controllers, datasets, model families) and the
rules each component sets on the other fields are checked above this package, by
``fedlora_ray.components.validate_run_config``: config imports nothing of the package."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from fedlora_ray.config.fields import ConfigError, RunConfig


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
            raise allowed_values(path, value, m["choices"])
        if m.get("ge") is not None and value < m["ge"]:
            raise ConfigError(f"config field '{path}' = {value!r}: must be >= {m['ge']}")
        if m.get("gt") is not None and value <= m["gt"]:
            raise ConfigError(f"config field '{path}' = {value!r}: must be > {m['gt']}")
        if m.get("le") is not None and value > m["le"]:
            raise ConfigError(f"config field '{path}' = {value!r}: must be <= {m['le']}")


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field's range and the rules that tie fields together, reading the config
    alone; return ``cfg``. Which component names exist, and each component's own rules, are
    ``fedlora_ray.components.validate_run_config``'s (it calls this first)."""
    _check_ranges(cfg)
    fed, samp = cfg.federation, cfg.sampling
    if fed.clients_per_round > fed.num_clients:
        raise ConfigError(
            f"config field 'federation.clients_per_round' = {fed.clients_per_round}: must be "
            f"<= federation.num_clients ({fed.num_clients})"
        )
    if cfg.channel.distance_min_m > cfg.channel.distance_max_m:
        raise ConfigError(
            f"config field 'channel.distance_min_m' = {cfg.channel.distance_min_m}: must be <= "
            f"channel.distance_max_m ({cfg.channel.distance_max_m})"
        )
    if not cfg.model.target_modules:
        raise ConfigError("config field 'model.target_modules' = []: name at least one module")
    if samp.q_min > samp.q_max:
        raise ConfigError(
            f"config field 'sampling.q_min' = {samp.q_min}: must be <= sampling.q_max ({samp.q_max})"
        )
    n, k = fed.num_clients, fed.clients_per_round
    if samp.kind == "independent" and not samp.q_min * n <= k <= samp.q_max * n:
        raise ConfigError(
            f"config field 'federation.clients_per_round' = {k}: with independent sampling the "
            f"expected number of participants must lie in [q_min N, q_max N] = "
            f"[{samp.q_min * n:g}, {samp.q_max * n:g}]"
        )
    if 0 < fed.divergence_factor <= 1:
        raise ConfigError(
            f"config field 'federation.divergence_factor' = {fed.divergence_factor}: must be 0 (the "
            "check off) or > 1 (a loss above its best so far by that factor)"
        )
    if cfg.runtime.num_gpus_per_actor > 1 and cfg.runtime.num_gpus_per_actor != int(
        cfg.runtime.num_gpus_per_actor
    ):
        raise ConfigError(
            f"config field 'runtime.num_gpus_per_actor' = {cfg.runtime.num_gpus_per_actor}: "
            "above 1 it must be a whole number"
        )
    _check_privacy(cfg)
    return cfg


def _check_privacy(cfg: RunConfig) -> None:
    """The privacy fields' own rules [docs/algorithms.md §14]."""
    p = cfg.privacy
    if p.kind not in ("central", "local"):  # none
        return
    if p.noise_multiplier == 0 and p.target_epsilon == 0:
        raise ConfigError(
            f"config field 'privacy.noise_multiplier' = 0: privacy.kind = {p.kind!r} needs a noise "
            "multiplier > 0, or privacy.target_epsilon > 0 to solve one for"
        )
    if p.noise_multiplier > 0 and p.target_epsilon > 0:
        raise ConfigError(
            f"config field 'privacy.target_epsilon' = {p.target_epsilon}: give either "
            "privacy.noise_multiplier or privacy.target_epsilon, not both"
        )
    if p.delta >= 1 / cfg.federation.num_clients:
        raise ConfigError(
            f"config field 'privacy.delta' = {p.delta}: must be < 1 / federation.num_clients "
            f"({1 / cfg.federation.num_clients:g}); a larger delta allows releasing a whole client's data"
        )
    if p.accountant == "pld" and p.kind == "central" and cfg.sampling.kind == "uniform":
        raise ConfigError(
            "config field 'privacy.accountant' = 'pld': dp-accounting's PLD accountant cannot account "
            "uniform K-of-N sampling (without replacement); use 'rdp', or sampling.kind = 'independent'"
        )


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


def allowed_values(path: str, value: Any, allowed: typing.Iterable[Any]) -> ConfigError:
    """The refusal of a value outside a fixed set (a field's ``choices``, or the names a
    registry holds), naming the field, the value and every allowed value."""
    return ConfigError(
        f"config field '{path}' = {value!r}: allowed values are {', '.join(repr(a) for a in allowed)}"
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
    """Read a YAML file (or start from ``base``), apply overrides, build and validate by the
    config's own rules (``validate``). A run's config goes through
    ``fedlora_ray.components.load_run_config``, which also checks the components it names."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config file {str(p)!r} is a folder; give the YAML file itself")
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {yaml_error_text(err)}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {err}") from None
        if loaded is None:
            # an empty file (or one of comments only) would silently run every default: a 100-client
            # MiniLM job of 20 rounds, which is rarely what a truncated or wrong file meant
            raise ConfigError(
                f"config file {str(p)!r} is empty (or holds only comments); give at least the fields "
                "that differ from the defaults (`fedlora-ray fields` lists them; jobs/configs/smoke.yaml "
                "is a small example)"
            )
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {str(p)!r} must hold a mapping (section: fields) at the top, not "
                f"a {type(loaded).__name__}"
            )
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
    """A copy of ``cfg`` with ``a.b=value`` overrides applied and validated by the config's own
    rules (a component that changes a field it owns, as TSFA sets the rank, needs no more)."""
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
