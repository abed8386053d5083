"""A run directory: config.json, rounds.parquet, clients.parquet, profile.parquet.

Each flush rewrites the Parquet files through temporary files and atomic renames:
clients.parquet first, then rounds.parquet. The rename of rounds.parquet is the commit point of
a round: a round is logged when rounds.parquet holds it, and clients.parquet may briefly hold
rows of one round more (a kill between the two renames). ``read_log`` and resume respect this,
so the two files always agree as read. Rows are checked against the fixed schemas as they arrive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedlora_ray.logging.schema import CLIENTS_SCHEMA, PROFILE_SCHEMA, ROUNDS_SCHEMA

_SCHEMAS = {"rounds": ROUNDS_SCHEMA, "clients": CLIENTS_SCHEMA}


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.exists():
        return schema.empty_table()
    table = pq.read_table(path)
    # columns added since the file was written come back as nulls
    return pa.Table.from_pylist(table.to_pylist(), schema=schema) if table.schema != schema else table


def read_log(run_dir: str | Path, upto: int | None = None) -> tuple[pa.Table, pa.Table]:
    """(rounds, clients) as committed: clients rows only of rounds that rounds.parquet holds,
    and none past ``upto``."""
    run_dir = Path(run_dir)
    rounds = _read(run_dir / "rounds.parquet", ROUNDS_SCHEMA)
    clients = _read(run_dir / "clients.parquet", CLIENTS_SCHEMA)
    last = max(rounds["round"].to_pylist(), default=0)
    if upto is not None:
        last = min(last, upto)
        rounds = rounds.filter(pc.less_equal(rounds["round"], last))
    return rounds, clients.filter(pc.less_equal(clients["round"], last))


class RunLog:
    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        flush_every: int = 1,
        resume_round: int | None = None,
    ) -> None:
        """A new run directory, or with ``resume_round`` an existing one whose logs are cut back
        to that round (rows past it are dropped, so the resumed run adds no gap or duplicate)."""
        self.dir = Path(run_dir)
        self.flush_every = flush_every
        self._pending_rounds = 0
        if resume_round is None:
            if (self.dir / "rounds.parquet").exists():
                raise FileExistsError(f"{self.dir} already holds a run's logs; choose another --out")
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / "config.json", json.dumps(config, indent=2, sort_keys=True).encode())
            self._tables = {name: [schema.empty_table()] for name, schema in _SCHEMAS.items()}
            return
        for stale in self.dir.glob("*.tmp"):
            stale.unlink()
        rounds, clients = read_log(self.dir, upto=resume_round)
        self._tables = {"rounds": [rounds], "clients": [clients]}
        self.flush()

    def rows(self, name: str) -> list[dict[str, Any]]:
        return pa.concat_tables(self._tables[name]).to_pylist()

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        schema = _SCHEMAS[name]
        for row in rows:
            extra = set(row) - set(schema.names)
            if extra:
                raise KeyError(f"{name}.parquet has no column(s) {sorted(extra)}")
        self._tables[name].append(pa.Table.from_pylist(rows, schema=schema))

    def append_round(self, round_row: dict[str, Any], client_rows: list[dict[str, Any]]) -> None:
        """Add one finished round; flush every ``flush_every`` rounds."""
        self._append("rounds", [round_row])
        self._append("clients", client_rows)
        self._pending_rounds += 1
        if self._pending_rounds >= self.flush_every:
            self.flush()

    def _replace(self, tmp: Path, final: Path) -> None:
        os.replace(tmp, final)

    def flush(self) -> None:
        """Write both files; rounds.parquet last, its rename commits the rounds it holds."""
        for name in ("clients", "rounds"):
            table = pa.concat_tables(self._tables[name])
            self._tables[name] = [table]
            tmp = self.dir / f"{name}.parquet.tmp"
            pq.write_table(table, tmp)
            self._replace(tmp, self.dir / f"{name}.parquet")
        self._pending_rounds = 0

    def write_profile(self, rows: list[dict[str, Any]]) -> None:
        """profile.parquet, once: every client's resources and the run's q_i and s_i."""
        tmp = self.dir / "profile.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA), tmp)
        os.replace(tmp, self.dir / "profile.parquet")

    def write_json(self, filename: str, obj: Any) -> None:
        write_atomic(self.dir / filename, json.dumps(obj, indent=2, sort_keys=True).encode())

    def close(self) -> None:
        self.flush()
