"""Parquet logs: fixed schemas, append per round, readable at every moment by pandas/polars/duckdb."""

import json

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from fedlora_ray.logging import CLIENTS_SCHEMA, ROUNDS_SCHEMA, RunLog


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
        assert len(pl.read_parquet(tmp_path / "run" / "clients.parquet")) == 2 * t
    assert pq.read_schema(tmp_path / "run" / "rounds.parquet").equals(ROUNDS_SCHEMA)
    assert pq.read_schema(tmp_path / "run" / "clients.parquet").equals(CLIENTS_SCHEMA)
    n = duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/run/clients.parquet' WHERE client_id = 1").fetchall()
    assert n == [(3,)]
    assert rounds["test_accuracy"].isna().all()  # absent columns are nulls, not missing
    assert not list((tmp_path / "run").glob("*.tmp"))


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
