"""Parquet logs: fixed schemas, append per round, readable at every moment by pandas/polars/duckdb."""

import json

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedlora_ray.rundir import CLIENTS_SCHEMA, ROUNDS_SCHEMA, RunLog, read_log


def _round(t):
    return {
        "round": t,
        "sampled": 2,
        "examples": 10,
        "train_loss": 1.0 / t,
        "covariance": 0.5,
        "uplink_bits": 64,
    }


def _clients(t):
    return [{"round": t, "client_id": c, "examples": 5, "actor_id": "a"} for c in range(2)]


def test_rows_are_appended_and_readable_after_each_round(tmp_path):
    log = RunLog(tmp_path / "run", {"k": 1})
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"k": 1}
    for t in (1, 2, 3):
        log.append_round(_round(t), _clients(t))
        # No close(): this is what a run killed right now would leave behind.
        rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
        assert rounds["round"].tolist() == list(range(1, t + 1))
        assert len(pl.read_parquet(tmp_path / "run" / "clients.parquet" / "*.parquet")) == 2 * t
    for name, schema in (("rounds", ROUNDS_SCHEMA), ("clients", CLIENTS_SCHEMA)):
        (part,) = (tmp_path / "run" / f"{name}.parquet").iterdir()
        assert pq.read_schema(part).equals(schema)
    glob = f"{tmp_path}/run/clients.parquet/*.parquet"
    assert duckdb.sql(f"SELECT count(*) FROM '{glob}' WHERE client_id = 1").fetchall() == [(3,)]
    assert rounds["test_accuracy"].isna().all()  # absent columns are nulls, not missing
    assert set(rounds["run_id"]) == {"run"}  # the folder's name when log.run_id is not given
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_long_logs_are_written_in_parts_and_only_the_open_part_is_rewritten(tmp_path):
    log = RunLog(tmp_path / "run", {"log": {"part_rounds": 3, "run_id": "sweep-a"}})
    written: list[str] = []
    plain = log._write_part
    log._write_part = lambda name, start, table: (  # type: ignore[method-assign]
        written.append(f"part-{start:06d}.parquet"),
        plain(name, start, table),
    )
    for t in range(1, 8):
        written.clear()
        log.append_round(_round(t), _clients(t))
        start = (t - 1) // 3 * 3 + 1
        assert written == [f"part-{start:06d}.parquet"] * 2  # clients, then rounds: one part each
    parts = sorted(p.name for p in (tmp_path / "run" / "rounds.parquet").iterdir())
    assert parts == ["part-000001.parquet", "part-000004.parquet", "part-000007.parquet"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["log"]["run_id"] == "sweep-a"
    # one logical dataset for pandas, polars and duckdb, rows in round order
    want = list(range(1, 8))
    assert pd.read_parquet(tmp_path / "run" / "rounds.parquet")["round"].tolist() == want
    assert pl.read_parquet(tmp_path / "run" / "rounds.parquet" / "*.parquet")["round"].to_list() == want
    got = duckdb.sql(f"SELECT run_id, max(round) FROM '{tmp_path}/run/*.parquet/*.parquet' GROUP BY run_id")
    assert got.fetchall() == [("sweep-a", 7)]
    assert sum(len(t) for parts in log._open.values() for t in parts.values()) <= 2  # only part 7 held
    assert [r["round"] for r in log.rows("rounds")] == want and len(log.rows("clients")) == 14


def test_resume_cuts_the_parts_back(tmp_path):
    log = RunLog(tmp_path, {"log": {"part_rounds": 2}})
    for t in range(1, 7):
        log.append_round(_round(t), _clients(t))
    resumed = RunLog(tmp_path, {"log": {"part_rounds": 2}}, resume_round=3)
    assert sorted(p.name for p in (tmp_path / "clients.parquet").iterdir()) == [
        "part-000001.parquet", "part-000003.parquet"
    ]  # fmt: skip
    resumed.append_round(_round(4), _clients(4))
    rounds, clients = read_log(tmp_path)
    assert rounds["round"].to_pylist() == [1, 2, 3, 4] and len(clients) == 8


def test_a_log_of_the_single_file_layout_resumes_as_parts(tmp_path):
    pq.write_table(pa.Table.from_pylist([_round(1), _round(2)]), tmp_path / "rounds.parquet")
    pq.write_table(pa.Table.from_pylist(_clients(1) + _clients(2)), tmp_path / "clients.parquet")
    assert read_log(tmp_path)[0]["round"].to_pylist() == [1, 2]
    log = RunLog(tmp_path, {"log": {"part_rounds": 1}}, resume_round=1)
    log.append_round(_round(2), _clients(2))
    assert (tmp_path / "rounds.parquet").is_dir()
    rounds, clients = read_log(tmp_path)
    assert rounds["round"].to_pylist() == [1, 2] and len(clients) == 4


def test_flush_every_batches_writes(tmp_path):
    log = RunLog(tmp_path, {}, flush_every=2)
    log.append_round(_round(1), _clients(1))
    assert not (tmp_path / "rounds.parquet").exists()
    log.append_round(_round(2), _clients(2))
    assert len(pd.read_parquet(tmp_path / "rounds.parquet")) == 2


def test_unknown_column_is_rejected(tmp_path):
    log = RunLog(tmp_path, {})
    with pytest.raises(KeyError, match="no column"):
        log.append_round({**_round(1), "accuracy_typo": 1.0}, [])


def test_a_run_directory_is_never_overwritten(tmp_path):
    RunLog(tmp_path, {}).append_round(_round(1), _clients(1))
    with pytest.raises(FileExistsError):
        RunLog(tmp_path, {})
