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
from fedlora_ray.storage import check_out, is_uri


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
    rep.add_argument("--out", default="report", help="folder for the PNGs and summary.md")
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
    cmp.add_argument("--by", nargs="+", help="group by these varied keys (default: all but the seed)")
    return p


def run_command(cfg: RunConfig, out: Path | str) -> dict:
    # Everything the config, --out and the data can refuse is refused here, before Ray starts.
    check_out(str(out))
    if is_uri(str(out)):
        return _run_checked(cfg, str(out))  # the run pulls the URI's folder and refuses one with logs
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is an existing file; --out names the run's folder")
    for parent in out.parents:  # the first existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")
            break
    if (out / "rounds.parquet").exists():
        raise ConfigError(f"--out {str(out)!r} already holds a run's logs; choose another folder")
    return _run_checked(cfg, out)


def _run_checked(cfg: RunConfig, out: Path | str) -> dict:
    from fedlora_ray.preflight import check_data

    # the data for every client, read and dealt once (numpy only); the model is checked where
    # it is built, before any training, so this process needs neither torch nor transformers
    data = check_data(cfg)
    if cfg.runtime.backend == "serial":
        from fedlora_ray.engine.serial import run_serial

        return run_serial(cfg, out, data)
    from actors.launch import run_on_ray

    return run_on_ray(cfg, out, data=data)


def resume_command(run_dir: Path | str, overrides: list[str]) -> dict:
    from fedlora_ray.preflight import check_data, resume_config

    check_out(str(run_dir), "resume")
    cfg = resume_config(run_dir, overrides)  # the one read of its config.json, folder or URI
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
            log = simulate_control(load_run_config(args.config, args.overrides), args.rounds)
        except ConfigError as err:
            print(f"fedlora-ray: error: {err}", file=sys.stderr)
            return 2
        df = log.rounds
        with atomic_path(args.out) as tmp:
            df.to_parquet(tmp)
        if args.clients:
            with atomic_path(args.clients) as tmp:
                log.clients.to_parquet(tmp)
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

        try:
            print(f"report: {write_report(args.runs, args.out)}")
        except FileNotFoundError as err:
            print(f"fedlora-ray: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "compare":
        from fedlora_ray.report import compare_table

        try:
            print(compare_table(args.runs, last=args.last, target=args.target, by=args.by))
        except (FileNotFoundError, ConfigError) as err:
            print(f"fedlora-ray: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "sweep":
        return sweep_command(args)
    from fedlora_ray.run_errors import BadUpdateError, DivergenceError  # no torch in this process

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
    except (DivergenceError, BadUpdateError) as err:  # the run stopped; its logs end at the last good round
        print(f"fedlora-ray: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 3
    print(f"run directory: {out}")
    print(json.dumps(summary, indent=2))
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    """Exit 0 when every run finished, 1 when some failed (the table names them), 2 when the
    spec or --out was refused before any run started."""
    from fedlora_ray.sweep import load_spec

    try:
        check_out(args.out)
        spec = load_spec(args.spec, args.seeds, args.overrides)
        from actors.sweep import closing_table, run_sweep

        root = args.out if is_uri(args.out) else str(Path(args.out).resolve())
        outcomes = run_sweep(spec, root, write=lambda line: print(line, flush=True))
    except ConfigError as err:
        print(f"fedlora-ray: error: {err}", file=sys.stderr)
        return 2
    print(closing_table(outcomes))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
