"""Sweeps: a grid of config keys x seeds expanded, named and run on the suite's Ray cluster; the
logs of all runs read as one table; finished runs skipped, started ones resumed; results on a URI."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from fedlora_ray.config import ConfigError
from fedlora_ray.sweep import load_spec, run_status
from tests.conftest import TINY
from tests.resume_helpers import TIMING

BASE = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TINY)}


def _spec(tmp_path: Path, **body) -> Path:  # type: ignore[no-untyped-def]
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_nested(BASE)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "base": "base.yaml", **body}, sort_keys=False))
    return spec


def _nested(flat: dict) -> dict:  # type: ignore[type-arg]
    out: dict = {}  # type: ignore[type-arg]
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def test_the_grid_is_expanded_named_and_validated(tmp_path):
    spec = load_spec(
        _spec(
            tmp_path,
            grid=[
                {
                    "compression.method": ["none", "soft"],
                    "rank": {
                        "r4": {"model.lora_rank": 4, "model.lora_alpha": 8},
                        "r8": {"model.lora_rank": 8},
                    },
                },
                {"algorithm.kind": ["ffa"]},
            ],
            seeds=[0, 1],
        )
    )
    assert len(spec.runs) == (2 * 2 + 1) * 2
    first = spec.runs[0]
    assert first.run_id == "method-none__rank-r4__seed-0"
    assert first.values == {"compression.method": "none", "rank": "r4", "seed": 0}
    cfg = spec.config(spec.runs[3])
    assert (cfg.compression.method, cfg.model.lora_rank, cfg.federation.seed) == ("none", 8, 1)
    assert cfg.log.run_id == spec.runs[3].run_id and cfg.runtime.progress is False
    assert spec.varied == ["compression.method", "rank", "seed", "algorithm.kind"]
    templated = load_spec(
        _spec(tmp_path, grid={"compression.method": ["soft"]}, run_name="m{compression.method}-s{seed}"),
        seeds=[3],
    )
    assert [r.run_id for r in templated.runs] == ["msoft-s3"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"grid": {"compression.method": ["none"]}, "sedes": [0]}, "unknown key(s) ['sedes']"),
        ({"grid": {"compression.method": []}}, "needs a non-empty list"),
        ({"grid": {"compression.method": ["none", "nosuch"]}}, "run 'method-nosuch__seed-0'"),
        ({"grid": {"compression.method": ["none", "soft"]}, "run_name": "x"}, "both named 'x'"),
        ({"grid": {"compression.method": ["none"]}, "run_name": "{rank}"}, "names 'rank'"),
        ({"grid": {"compression.method": ["none"]}, "seeds": "0"}, "'seeds' must be"),
    ],
)
def test_a_bad_spec_is_refused_before_any_run(tmp_path, body, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_spec(_spec(tmp_path, **body))
    assert message in str(err.value)


def test_run_status_tells_new_done_resume_restart_and_refuses_another_config(tmp_path):
    spec = load_spec(_spec(tmp_path, grid={"compression.method": ["none"]}))
    cfg = spec.config(spec.runs[0])
    run = tmp_path / "run"
    assert run_status(str(run), cfg) == "new"
    run.mkdir()
    (run / "rounds.parquet").mkdir()
    assert run_status(str(run), cfg) == "restart"
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert run_status(str(run), cfg) == "restart"  # started, but no checkpoint yet
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "round-000001.safetensors").write_bytes(b"")
    assert run_status(str(run), cfg) == "resume"
    (run / "summary.json").write_text("{}")
    assert run_status(str(run), cfg) == "done"
    longer = load_spec(_spec(tmp_path, grid={"compression.method": ["none"]}, set={"federation.rounds": 3}))
    assert run_status(str(run), longer.config(longer.runs[0])) == "resume"  # extended: continue
    other = load_spec(_spec(tmp_path, grid={"compression.method": ["none"]}, set={"federation.lr": 0.1}))
    with pytest.raises(ConfigError, match=r"differs from the sweep's in \['federation.lr'\]"):
        run_status(str(run), other.config(other.runs[0]))


def _frame(path: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(path / f"{name}.parquet")
    return df[[c for c in df.columns if c not in TIMING]]


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_runs_on_the_cluster_skips_resumes_and_reads_as_one_table(
    ray_session, tmp_path, capsys, monkeypatch
):
    """A packed serial run (a task holding half a GPU) and a run on the Ray backend (its own
    driver and actor) run at once; a run that fails its preflight does not stop them. Run again
    with a second seed and one more round: the finished runs resume from their checkpoints (and
    equal one-go runs), the new ones start, and the broken ones fail again."""
    from actors.cli import main
    from fedlora_ray.engine.serial import run_serial
    from tests.conftest import tiny_config

    spec = _spec(
        tmp_path,
        grid={
            "scheme": {
                "packed": {"compression.method": "soft", "compression.keep_ratio": 0.3},
                "actors": {"runtime.backend": "ray", "runtime.num_actors": 1},
                "broken": {"model.target_modules": ["nosuch"]},
            }
        },
        seeds=[0],
        run_name="{scheme}-s{seed}",
        set={"runtime.ray_address": ray_session["address"]},
        task={"num_cpus": 1, "num_gpus": 0.5},  # the suite's cluster has two (fake) GPUs
    )
    root = tmp_path / "sweep"
    monkeypatch.setattr("actors.sweep.PROGRESS_S", 1.0)  # where each running run is: every second here
    assert main(["sweep", str(spec), "--out", str(root)]) == 1
    out = capsys.readouterr().out
    assert "3 runs under" in out and "at most 3 at once" in out
    assert "\n  packed-s0: " in out and "\n  actors-s0: " in out  # the progress of the running runs
    from actors.sweep import _where

    where = _where(str(root / "packed-s0"), 2, 0.0, "packed-s0")  # read from the run's own log
    assert where.startswith("  packed-s0: round 2/2, test accuracy 0."), where
    table = out[out.index("run  ") :]
    assert "broken-s0  failed" in table and "'model.target_modules[0]' = 'nosuch'" in table
    assert "1 of 3 runs failed: broken-s0" in table and "packed-s0  done" in table

    more = ["--seeds", "0", "1", "--set", "federation.rounds=3"]
    assert main(["sweep", str(spec), "--out", str(root), *more]) == 1
    assert "2 of 6 runs failed: broken-s0, broken-s1" in capsys.readouterr().out
    for name, sets in (
        ("packed-s0", ["compression.method=soft", "compression.keep_ratio=0.3"]),
        ("actors-s0", []),
    ):
        one_go = tmp_path / f"one-go-{name}"
        run_serial(tiny_config(*sets, "federation.rounds=3"), one_go)
        for kind in ("rounds", "clients"):
            pd.testing.assert_frame_equal(_frame(root / name, kind), _frame(one_go, kind), check_exact=True)
        got, want = (
            load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (root / name, one_go)
        )
        assert all((got[k] == want[k]).all() for k in want)
    assert set(pd.read_parquet(root / "actors-s1" / "clients.parquet")["actor_id"]) == {"actor-0"}
    assert main(["sweep", str(spec), "--out", str(root), *more]) == 1
    assert "4/6 done (4 before)" in capsys.readouterr().out  # nothing left to run but the broken ones

    # the logs of every run, one table joined onto the sweep's varied values
    joined = duckdb.sql(
        f"SELECT scheme, seed, count(*) AS n, max(round) AS last FROM '{root}/*/rounds.parquet/*.parquet' "
        f"JOIN '{root}/runs.parquet' USING (run_id) GROUP BY scheme, seed ORDER BY scheme, seed"
    ).fetchall()
    assert joined == [("actors", 0, 3, 3), ("actors", 1, 3, 3), ("packed", 0, 3, 3), ("packed", 1, 3, 3)]

    # compare and report over the whole sweep, grouped by the varied key
    assert main(["compare", str(root), "--last", "2", "--target", "0.0"]) == 0
    text = capsys.readouterr().out
    assert "| scheme=actors | 2 | 3 ± 0 |" in text and "| scheme=packed | 2 | 3 ± 0 |" in text
    assert "broken" not in text  # runs that never logged a round are not a group
    assert main(["report", str(root), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "accuracy_vs_round.png").is_file()
    assert "scheme=packed" in (tmp_path / "rep" / "summary.md").read_text()


def test_a_run_writes_to_a_uri_and_resumes_from_it(tmp_path, monkeypatch):
    """file:// goes through pyarrow's filesystem like s3:// or gs://: the run writes a staging
    copy and pushes it after each round; resuming pulls the folder back."""
    monkeypatch.setenv("FEDLORA_RAY_STAGING", str(tmp_path / "staging"))
    import importlib

    import fedlora_ray.storage as storage

    importlib.reload(storage)
    monkeypatch.setattr("fedlora_ray.engine.mirror.Mirror", storage.Mirror)
    from fedlora_ray.engine.serial import resume_serial, run_serial
    from tests.conftest import tiny_config

    uri = f"file://{tmp_path}/remote/run"
    run_serial(tiny_config("federation.rounds=2", "checkpoint.every=1"), uri)
    remote = tmp_path / "remote" / "run"
    assert (remote / "summary.json").is_file() and len(pd.read_parquet(remote / "rounds.parquet")) == 2
    assert not list(remote.rglob("*.tmp")) and (remote / "checkpoint" / "round-000002.safetensors").is_file()
    resume_serial(uri, ["federation.rounds=3"])
    run_serial(tiny_config("federation.rounds=3"), tmp_path / "one-go")
    for kind in ("rounds", "clients"):
        pd.testing.assert_frame_equal(
            _frame(remote, kind), _frame(tmp_path / "one-go", kind), check_exact=True
        )
    names = sorted(p.name for p in (remote / "checkpoint").iterdir())
    assert names == ["round-000002.safetensors", "round-000003.safetensors"]


def test_a_relative_out_is_refused_under_ray_job_submit(tmp_path, monkeypatch, capsys):
    from actors.cli import main

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a job's entrypoint
    spec = _spec(tmp_path, grid={"compression.method": ["none"]})
    base = str(tmp_path / "base.yaml")
    for argv in (["run", base, "--out", "runs/x"], ["run", base], ["sweep", str(spec), "--out", "sw"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is relative: under `ray job submit`" in err and "s3://bucket" in err
    assert main(["run", base, "--out", "ftp://host/x"]) == 2
    assert "not one pyarrow's filesystems open" in capsys.readouterr().err


@pytest.mark.ray
def test_a_sweep_writes_to_a_uri_through_the_driver_actor(ray_session, tmp_path, capsys):
    """The sweep's root is a URI: runs.parquet goes there, and a run on the Ray backend has its
    DriverActor write a staging copy and push it after each round."""
    from actors.cli import main

    spec = _spec(
        tmp_path,
        grid={"runtime.backend": ["ray"]},
        set={"runtime.ray_address": ray_session["address"], "runtime.num_actors": 1},
        run_name="uri-s{seed}",
    )
    root = tmp_path / "bucket" / "sweep"
    assert main(["sweep", str(spec), "--out", f"file://{root}"]) == 0
    assert pd.read_parquet(root / "runs.parquet")["run_id"].tolist() == ["uri-s0"]
    run = root / "uri-s0"
    assert json.loads((run / "summary.json").read_text())["run_id"] == "uri-s0"
    assert pd.read_parquet(run / "rounds.parquet")["round"].tolist() == [1, 2]
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and not list(run.rglob("*.tmp"))
    # run again: the finished run is read back from the URI and skipped
    capsys.readouterr()
    assert main(["sweep", str(spec), "--out", f"file://{root}"]) == 0
    assert "1/1 done (1 before)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "jobs" / "sweeps").glob("*.yaml")), ids=str
)
def test_every_shipped_sweep_spec_expands_into_valid_configs(path):
    spec = load_spec(path)  # validates every run's config
    assert spec.runs and len({r.run_id for r in spec.runs}) == len(spec.runs)


@pytest.mark.ray
def test_ctrl_c_stops_a_running_sweep_and_leaves_it_resumable(ray_session, tmp_path):
    """SIGINT (what Ctrl-C sends) to a sweep whose run is mid-way: the command ends at once with
    exit 130 and says which runs it stopped; the stopped run writes nothing more, and the same
    command would resume it from its checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import wait_for

    long = {"federation.rounds": 400, "checkpoint.every": 1, "runtime.ray_address": ray_session["address"]}
    spec = _spec(tmp_path, grid={"compression.method": ["none"]}, set=long, run_name="long-s{seed}")
    root = tmp_path / "sweep"
    run = root / "long-s0"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "sweep", str(spec), "--out", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert wait_for(lambda: len(list((run / "checkpoint").glob("round-*.safetensors"))) >= 2, 120)
        assert sweep.poll() is None, "the run ended before it could be interrupted"
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130, err
    assert "sweep interrupted; stopped 1 running run(s): long-s0" in err and "resumes them" in err

    def written() -> list[str]:
        return sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    before = written()
    time.sleep(3)  # the killed run's process would have logged several more rounds by now
    assert written() == before
    cfg = load_spec(spec).config(load_spec(spec).runs[0])
    assert run_status(str(run), cfg) == "resume"
