"""The ``fedlora-ray`` console command.

fedlora-ray run CONFIG.yaml [--out RUN_DIR] [--set a.b=value ...]
fedlora-ray resume RUN_DIR [--set federation.rounds=N]   # continue from the newest checkpoint
fedlora-ray fields            # every config field with its default and help; registered names
fedlora-ray report RUN_DIR|SWEEP_ROOT [...] [--out DIR]   # standard plots + summary.md
fedlora-ray sweep SPEC.yaml --out ROOT [--seeds 0 1 2] [--set a.b=value ...]   # a grid of runs on Ray
fedlora-ray compare SWEEP_ROOT|RUN_DIR [...] [--last K] [--target ACC]   # a table per group of runs
fedlora-ray control CONFIG.yaml [--rounds N] [--out FILE.parquet] [--set ...]  # no training

--out may be a path, a mounted shared folder, or a URI (s3://..., gs://...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fedlora_ray.atomic_write import atomic_path
from fedlora_ray.components import load_run_config, registered_names
from fedlora_ray.config import ConfigError, RunConfig, help_table
from fedlora_ray.storage import check_folder_out, check_no_file_on_path, check_out, is_uri


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedlora-ray", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one federated job")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--out", help="run directory or URI (default runs/NAME-TIMESTAMP)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="a.b=value",
        help="override a config field (repeatable)",
    )  # fmt: skip
    res = sub.add_parser("resume", help="continue a run from its newest checkpoint")
    res.add_argument("run_dir", help="the run directory (its config.json is authoritative)")
    res.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="federation.rounds=N",
        help="only federation.rounds may change: it extends the run",
    )  # fmt: skip
    sub.add_parser(
        "fields", help="list every config field with its default and help, and the registered names"
    )
    ctl = sub.add_parser("control", help="no training: any scheme and controller (10k rounds in ~12 s)")
    ctl.add_argument("config", help="YAML config file")
    ctl.add_argument("--rounds", type=int, default=10_000)
    ctl.add_argument("--out", default="control.parquet", help="Parquet file, one row per round")
    ctl.add_argument("--clients", help="also write one row per participant to this Parquet file")
    ctl.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=value")
    rep = sub.add_parser("report", help="plots and a markdown summary from run directories or sweeps")
    rep.add_argument("runs", nargs="+", help="run directories, or sweep roots (all their runs)")
    rep.add_argument("--out", default="report", help="folder for the PNGs and summary.md (new, empty, "
                     "or an earlier report's)")  # fmt: skip
    rep.add_argument("--by", nargs="+", help="group by these keys (a sweep's varied keys, 'seed', or "
                     "config fields as section.field; default: runs differing only in the seed)")  # fmt: skip
    swp = sub.add_parser("sweep", help="run a grid of config keys x seeds on Ray, many runs at once")
    swp.add_argument("spec", help="sweep spec (YAML; see jobs/sweeps/)")
    swp.add_argument("--out", required=True, help="sweep root: a folder or URI, one run folder per run")
    swp.add_argument("--seeds", type=int, nargs="+", help="replace the spec's seeds")
    swp.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=value",
                     help="override a config field of every run (repeatable)")  # fmt: skip
    cmp = sub.add_parser("compare", help="final and last-k accuracy, bits and time to a target, per group")
    cmp.add_argument("runs", nargs="+", help="sweep roots or run directories")
    cmp.add_argument("--last", type=int, default=3, help="mean accuracy over the last K evaluations")
    cmp.add_argument("--target", type=float, help="accuracy for the time-to-target columns (default: "
                     "90%% of the worst group's best mean accuracy)")  # fmt: skip
    cmp.add_argument("--by", nargs="+", help="group by these keys (a sweep's varied keys, 'seed', or "
                     "config fields as section.field; default: all varied keys but the seed)")  # fmt: skip
    return p


def run_command(cfg: RunConfig, out: Path | str) -> dict:
    # Everything the config, --out and the data can refuse is refused here, before Ray starts.
    check_out(str(out))
    if is_uri(str(out)):
        return _run_checked(cfg, str(out))  # the run pulls the URI's folder and refuses one with logs
    out = Path(out)
    check_folder_out(out, "the run's folder")
    if (out / "rounds.parquet").exists():
        raise ConfigError(f"--out {str(out)!r} already holds a run's logs; choose another folder")
    return _run_checked(cfg, out)


def _run_checked(cfg: RunConfig, out: Path | str) -> dict:
    from fedlora_ray.preflight import check_data, check_precision

    check_precision(cfg)
    # the data for every client, read and dealt once (numpy only); the model is checked where
    # it is built, before any training, so this process needs neither torch nor transformers
    data = check_data(cfg)
    if cfg.runtime.backend == "serial":
        from fedlora_ray.engine.serial import run_serial

        return run_serial(cfg, out, data)
    from actors.launch import run_on_ray

    return run_on_ray(cfg, out, data=data)


def resume_command(run_dir: Path | str, overrides: list[str]) -> dict:
    from fedlora_ray.preflight import check_data, check_precision, resume_config

    check_out(str(run_dir), "resume")
    cfg = resume_config(run_dir, overrides)  # the one read of its config.json, folder or URI
    check_precision(cfg)  # a run folder copied to a machine without the GPU it ran on
    data = check_data(cfg)
    if cfg.runtime.backend == "serial":
        from fedlora_ray.engine.serial import run_serial

        return run_serial(cfg, run_dir, data, resume=True)
    from actors.launch import run_on_ray

    return run_on_ray(cfg, run_dir, resume=True, data=data)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fields":
        registered = registered_names()  # the registries' names now, user-registered ones included
        for name, default, text in help_table():
            print(
                f"{name} = {json.dumps(list(default) if isinstance(default, tuple) else default)}\n    {text}"
            )
            if name in registered:
                print(f"    registered: {', '.join(repr(n) for n in registered[name])}")
        return 0
    if args.command == "control":
        from fedlora_ray.control.controller_only import simulate_control

        try:
            check_control_out(args.out, "--out")
            if args.clients:
                check_control_out(args.clients, "--clients")
                if Path(args.clients).resolve() == Path(args.out).resolve():
                    raise ConfigError(
                        f"--clients {args.clients!r} is --out's file too; give each its own file"
                    )
            log = simulate_control(load_run_config(args.config, args.overrides), args.rounds)
        except ConfigError as err:
            print(f"fedlora-ray: error: {err}", file=sys.stderr)
            return 2
        df = log.rounds
        from fedlora_ray.run_errors import DiskFullError

        try:
            write_control_parquet(df, args.out)
            if args.clients:
                write_control_parquet(log.clients, args.clients)
        except DiskFullError as err:  # the write left no partial file behind
            print(f"fedlora-ray: error: {err}", file=sys.stderr)
            return 3
        print(
            f"{args.out}: {len(df)} rounds, rank {df['lora_rank'].iloc[0]}, mean keep ratio "
            f"{df['keep_ratio'].mean():.3f}, mean upload delay {df['upload_delay_s'].mean():.4f} s, "
            f"mean round delay {df['round_delay_s'].mean():.4f} s, "
            f"{df['uplink_bits'].mean() / 1e6:.2f} Mbit/round, simulated {df['sim_time_s'].iloc[-1]:.0f} s, "
            f"mean bound {df['bound'].mean():.4f}"
        )
        return 0
    if args.command == "report":
        from fedlora_ray.report import write_report
        from fedlora_ray.run_errors import DamagedFileError

        try:
            print(f"report: {write_report(args.runs, args.out, by=args.by)}")
        except (FileNotFoundError, ConfigError, DamagedFileError) as err:
            print(f"fedlora-ray: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "compare":
        from fedlora_ray.report import compare_table
        from fedlora_ray.run_errors import DamagedFileError

        try:
            print(compare_table(args.runs, last=args.last, target=args.target, by=args.by))
        except (FileNotFoundError, ConfigError, DamagedFileError) as err:
            print(f"fedlora-ray: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "sweep":
        return sweep_command(args)
    from fedlora_ray.run_errors import (  # no torch in this process
        BadUpdateError,
        DamagedFileError,
        DiskFullError,
        DivergenceError,
    )

    try:
        if args.command == "resume":
            out = args.run_dir
            summary = resume_command(out, args.overrides)
        else:
            cfg = load_run_config(args.config, args.overrides)
            out = args.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            summary = run_command(cfg, out)
    except ConfigError as err:
        # from a Ray actor it comes wrapped (a RayTaskError that is also a ConfigError): its
        # cause is the error as raised, without the remote traceback
        print(f"fedlora-ray: error: {getattr(err, 'cause', None) or err}", file=sys.stderr)
        return 2
    except DamagedFileError as err:  # a file of the run folder failed its check: one line, no traceback
        print(f"fedlora-ray: error: {getattr(err, 'cause', None) or err}", file=sys.stderr)
        return 2
    except (DivergenceError, BadUpdateError) as err:  # the run stopped; its logs end at the last good round
        print(f"fedlora-ray: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 3
    except DiskFullError as err:  # the run stopped at its last complete round; resume continues it
        print(f"fedlora-ray: error: {getattr(err, 'cause', None) or err}", file=sys.stderr)
        return 3
    print(f"run directory: {out}")
    print(json.dumps(summary, indent=2))
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    """Exit 0 when every run finished, 1 when some failed (the table names them), 2 when the
    spec or --out was refused before any run started, 130 when Ctrl-C stopped it."""
    from fedlora_ray.sweep import check_sweep_root, load_spec

    try:
        check_out(args.out)
        check_sweep_root(args.out)
        spec = load_spec(args.spec, args.seeds, args.overrides)
        from actors.sweep import SweepInterrupted, closing_table, run_sweep

        root = args.out if is_uri(args.out) else str(Path(args.out).resolve())
        outcomes = run_sweep(spec, root, write=lambda line: print(line, flush=True))
    except ConfigError as err:
        print(f"fedlora-ray: error: {err}", file=sys.stderr)
        return 2
    except SweepInterrupted as stop:
        print(
            f"fedlora-ray: sweep interrupted; stopped {len(stop.stopped)} running run(s): "
            f"{', '.join(stop.stopped) or 'none'}. The same command resumes them from their newest "
            "checkpoints and skips the finished ones",
            file=sys.stderr,
        )
        return 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)
    print(closing_table(outcomes))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


# What control writes into its Parquet files' metadata: a later control may replace such a file,
# never another one.
_CONTROL_MARK = (b"fedlora-ray", b"control")


def check_control_out(path: str, flag: str) -> None:
    """Refuse, before any work, a control output that is not control's own: a URI (control writes
    a local file), a folder, a path through a file, or an existing file that an earlier control
    did not write (Parquet with control's mark or exactly its columns) [ours]."""
    if is_uri(path):
        raise ConfigError(f"{flag} {path!r}: control writes a local Parquet file; give a path")
    out = Path(path)
    if out.is_dir():
        raise ConfigError(
            f"{flag} {path!r} is a folder; {flag} names the Parquet file control writes "
            f"(e.g. {str(out / 'control.parquet')!r})"
        )
    check_no_file_on_path(out, flag)
    if out.exists() and not _written_by_control(out):
        raise ConfigError(
            f"{flag} {path!r} is an existing file that control did not write; it is left as it is. "
            "Give a new path (or an earlier control's Parquet file, which is replaced)"
        )


def _written_by_control(path: Path) -> bool:
    import pyarrow.parquet as pq

    from fedlora_ray.control.controller_only import CLIENT_COLUMNS, ROUND_COLUMNS

    try:
        schema = pq.read_schema(path)
    except Exception:  # not Parquet at all (pyarrow raises ArrowInvalid, OSError, ...)
        return False
    if (schema.metadata or {}).get(_CONTROL_MARK[0]) == _CONTROL_MARK[1]:
        return True
    names = [n for n in schema.names if n != "__index_level_0__"]
    return names in (ROUND_COLUMNS, CLIENT_COLUMNS)  # written before the mark existed


def write_control_parquet(df: object, path: str) -> None:
    """A control table, whole or not at all, with control's mark in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _CONTROL_MARK[0]: _CONTROL_MARK[1]}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


if __name__ == "__main__":
    sys.exit(main())
