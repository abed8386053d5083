"""A sweep: one base config, a grid of config keys x seeds, one run folder per point.

A spec is a YAML file::

    name: fig3
    base: ../configs/quickstart.yaml        # relative to the spec file
    set: {federation.rounds: 30}            # fixed overrides of every run
    grid:                                   # the product of its axes (a list of grids: their union)
      compression.method: [none, soft]      # a config key and its values
      rank:                                 # a named axis: label -> overrides that go together
        r8: {model.lora_rank: 8, model.lora_alpha: 16}
        r16: {model.lora_rank: 16, model.lora_alpha: 32}
    seeds: [0, 1, 2]                        # federation.seed
    run_name: "fig3-{compression.method}-{rank}-s{seed}"   # optional; default: the varied values;
                                            # [-r{rank}] is left out of runs whose grid lacks rank
    task: {num_cpus: 1, num_gpus: 0}        # what one run reserves on the cluster (serial runs)
    max_concurrent: 0                       # 0: as many as the cluster holds

Everything here is plain data: expanding the grid, naming the runs, telling a finished run from
one to resume, and the sweep's runs.parquet (one row per run: run_id and its varied values, so
that ``ROOT/*/rounds.parquet`` joins onto it). ``actors.sweep`` runs it on Ray.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedlora_ray.components import load_run_config
from fedlora_ray.config import ConfigError, RunConfig

_SPEC_KEYS = {"name", "base", "set", "grid", "seeds", "run_name", "task", "max_concurrent"}
RUNS_FILE = "runs.parquet"


@dataclass(frozen=True)
class SweepRun:
    run_id: str  # also the run's folder under the sweep root
    values: dict[str, Any]  # the varied values: axis name or config key -> value (label for named axes)
    overrides: tuple[str, ...]  # a.b=value, applied to the base config in order


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: Path
    runs: tuple[SweepRun, ...]
    task_cpus: float = 1.0
    task_gpus: float = 0.0
    max_concurrent: int = 0
    fixed: tuple[str, ...] = field(default=())

    def config(self, run: SweepRun) -> RunConfig:
        """The run's whole config: base, the spec's ``set``, the run's values, then its id. A
        sweep's runs print no per-round lines unless ``set`` asks for them: the sweep prints its own."""
        overrides = ["runtime.progress=false", *self.fixed, *run.overrides, f"log.run_id={run.run_id}"]
        return load_run_config(self.base, overrides)

    @property
    def varied(self) -> list[str]:
        """The columns of runs.parquet beside run_id, in the spec's order."""
        return list(dict.fromkeys(k for run in self.runs for k in run.values))


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: lists, numbers, strings, booleans


def _fail(path: Path, text: str) -> ConfigError:
    return ConfigError(f"sweep spec {str(path)!r}: {text}")


def _axes(path: Path, grid: Any) -> list[list[tuple[str, Any, list[str]]]]:
    """One grid's axes: for each, its points as (value or label, value for runs.parquet, overrides)."""
    if not isinstance(grid, dict) or not grid:
        raise _fail(path, "'grid' must map config keys (or named axes) to their values")
    axes = []
    for key, values in grid.items():
        if "." in key:  # a config key with a list of values
            if not isinstance(values, list) or not values:
                raise _fail(path, f"grid key {key!r} needs a non-empty list of values")
            axes.append([(key, v, [_override(key, v)]) for v in values])
        else:  # a named axis: label -> overrides
            if not isinstance(values, dict) or not values:
                raise _fail(path, f"named axis {key!r} needs a mapping label -> {{config.key: value}}")
            points = []
            for label, sets in values.items():
                if not isinstance(sets, dict) or not all("." in k for k in sets):
                    raise _fail(path, f"named axis {key!r}, {label!r}: give a mapping of config keys")
                points.append((key, str(label), [_override(k, v) for k, v in sets.items()]))
            axes.append(points)
    return axes


def _name(template: str | None, values: dict[str, Any], path: Path) -> str:
    if template is None:
        text = "__".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in values.items())
    else:
        # [..] is left out for runs that lack a key inside it (one grid of a union varies it,
        # another not); {key} is replaced by the run's value (dotted keys too, so no str.format)
        def optional(match: re.Match[str]) -> str:
            inside = re.findall(r"\{([^{}]+)\}", match.group(1))
            return match.group(1) if all(k in values for k in inside) else ""

        template = re.sub(r"\[([^\[\]]*)\]", optional, template)
        for key in re.findall(r"\{([^{}]+)\}", template):
            if key not in values:
                raise _fail(path, f"run_name {template!r} names {key!r}, which no axis varies")
        text = re.sub(r"\{([^{}]+)\}", lambda m: str(values[m.group(1)]), template)
    clean = re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("._")
    if not clean:
        raise _fail(path, f"run_name {template!r} gives an empty name")
    return clean


def load_spec(
    path: str | Path,
    seeds: list[int] | None = None,
    extra: Sequence[str] = (),
    base: str | Path | None = None,
) -> SweepSpec:
    """Read and expand a spec; every run's config is validated here, before any work starts.
    ``seeds`` replaces the spec's seeds; ``extra`` overrides (a.b=value) apply to every run;
    ``base`` replaces the spec's base config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise _fail(path, f"not valid YAML ({err})") from None
    if raw is None:
        raise _fail(path, "the file is empty (or holds only comments); see jobs/sweeps/ for specs")
    if not isinstance(raw, dict):
        raise _fail(path, "must hold a mapping at the top")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise _fail(path, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
    if "base" not in raw and base is None:
        raise _fail(path, "'base' must name the base config file")
    base = Path(base).resolve() if base is not None else (path.parent / str(raw["base"])).resolve()
    grids = raw.get("grid", [{}])
    grids = grids if isinstance(grids, list) else [grids]
    seed_list = seeds if seeds is not None else raw.get("seeds", [0])
    if not isinstance(seed_list, list) or not seed_list or not all(isinstance(s, int) for s in seed_list):
        raise _fail(path, "'seeds' must be a non-empty list of integers")
    fixed = [_override(k, v) for k, v in (raw.get("set") or {}).items()] + list(extra)
    runs: dict[str, SweepRun] = {}
    for grid in grids:
        axes = _axes(path, grid) if grid else []
        for combo in itertools.product(*axes):
            for seed in seed_list:
                values = {key: shown for key, shown, _ in combo} | {"seed": seed}
                sets = [o for _, _, overrides in combo for o in overrides] + [f"federation.seed={seed}"]
                run_id = _name(raw.get("run_name"), values, path)
                if run_id in runs:
                    raise _fail(path, f"two runs are both named {run_id!r}; make run_name tell them apart")
                runs[run_id] = SweepRun(run_id, values, tuple(sets))
    task = raw.get("task") or {}
    spec = SweepSpec(
        name=str(raw.get("name", path.stem)),
        base=base,
        runs=tuple(runs.values()),
        task_cpus=float(task.get("num_cpus", 1.0)),
        task_gpus=float(task.get("num_gpus", 0.0)),
        max_concurrent=int(raw.get("max_concurrent", 0)),
        fixed=tuple(fixed),
    )
    if spec.task_cpus < 0 or spec.task_gpus < 0:
        raise _fail(path, "task.num_cpus and task.num_gpus must be >= 0")
    if spec.max_concurrent < 0:
        raise _fail(path, "max_concurrent must be >= 0 (0: as many as the cluster holds)")
    from fedlora_ray.preflight import check_precision

    for run in spec.runs:
        try:
            cfg = spec.config(run)
            # a packed serial run gets the task's GPU share on some node, not this machine's device
            if not (cfg.runtime.backend == "serial" and spec.task_gpus > 0):
                check_precision(cfg)
        except ConfigError as err:
            raise ConfigError(f"sweep spec {str(path)!r}, run {run.run_id!r}: {err}") from None
    return spec


def check_sweep_root(root: str) -> None:
    """Refuse, before any work, a sweep root that is not a sweep's: a file, a path through a
    file, a run's own folder, or a folder holding other things and no sweep (runs.parquet or
    sweep.json). A sweep root is reused as it is: finished runs are skipped, started ones resume,
    and another spec may add its runs beside them (fig3v.yaml joins fig3.yaml's root) [ours]."""
    from fedlora_ray.storage import check_folder_out, is_uri, list_names

    if not is_uri(root):
        check_folder_out(Path(root), "the sweep's root folder")
    names = [n for n in list_names(root, "") if not n.startswith(".")]
    if not names or RUNS_FILE in names or "sweep.json" in names:
        return
    if "rounds.parquet" in names or "config.json" in names:
        raise ConfigError(
            f"--out {root!r} is a run's folder, not a sweep root; give the sweep its own folder"
        )
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise ConfigError(
        f"--out {root!r} holds files that are not a sweep's ({shown}); give a new or empty folder, or "
        "an earlier sweep's root"
    )


# --------------------------------------------------------------------------- a run's status


def run_status(place: str, cfg: RunConfig) -> str:
    """'done' (summary.json written), 'resume' (a checkpoint to continue from), 'restart'
    (a started run with no checkpoint: its partial logs are discarded) or 'new'. ``place`` is
    the run's folder or URI. A run whose stored config differs from the spec's, other than in
    federation.rounds, is refused."""
    from fedlora_ray.rundir.checkpoint import _NAME, CHECKPOINT_DIR
    from fedlora_ray.storage import list_names, read_json, read_text

    old = read_json(place, "config.json", "remove that run folder, or resume it alone first")
    if old is None:
        return "restart" if list_names(place, "") else "new"
    new = cfg.to_dict()
    diff = sorted(_diff(old, new, RunConfig().to_dict()) - {"federation.rounds"})
    if diff:
        raise ConfigError(
            f"{place} holds a run whose config differs from the sweep's in {diff}; "
            "give the sweep another --out, or remove that run folder"
        )
    finished = read_text(place, "summary.json") is not None
    if finished and old["federation"]["rounds"] >= new["federation"]["rounds"]:
        return "done"
    checkpoints = [n for n in list_names(place, CHECKPOINT_DIR) if _NAME.match(n)]
    return "resume" if checkpoints else "restart"


_ABSENT = object()


def _diff(a: Any, b: Any, default: Any = _ABSENT, prefix: str = "") -> set[str]:
    """The dotted fields where stored config ``a`` and the sweep's ``b`` differ. A field ``a``
    lacks (its run was written before the field existed) counts as its ``default``."""
    if a is _ABSENT:
        a = default
    if isinstance(a, dict) and isinstance(b, dict):
        defaults = default if isinstance(default, dict) else {}
        return {
            d
            for k in set(a) | set(b)
            for d in _diff(a.get(k, _ABSENT), b.get(k), defaults.get(k, _ABSENT), f"{prefix}{k}.")
        }
    return set() if a == b else {prefix.rstrip(".")}


def runs_table(spec: SweepSpec) -> Any:
    """runs.parquet's table: run_id, then one column per varied key (values as given; lists as
    JSON text), so a sweep's logs join onto it with ``USING (run_id)``."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {"run_id": [r.run_id for r in spec.runs]}
    for key in spec.varied:
        values = [r.values.get(key) for r in spec.runs]
        if any(isinstance(v, (list, dict)) for v in values):
            values = [json.dumps(v) if v is not None else None for v in values]
        if len({type(v) for v in values if v is not None}) > 1:
            values = [str(v) if v is not None else None for v in values]
        columns[key] = values
    return pa.table(columns)
