"""A run directory: config.json, rounds.parquet, clients.parquet (and later the adapter).

Each flush rewrites the Parquet files through a temporary file and an atomic rename, so a run
killed at any moment leaves complete, readable files holding every round flushed so far, and
never a half-written one. Rows are checked against the fixed schemas as they arrive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedlora_ray.logging.schema import CLIENTS_SCHEMA, PROFILE_SCHEMA, ROUNDS_SCHEMA


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class RunLog:
    def __init__(self, run_dir: str | Path, config: dict[str, Any], flush_every: int = 1) -> None:
        self.dir = Path(run_dir)
        if (self.dir / "rounds.parquet").exists():
            raise FileExistsError(f"{self.dir} already holds a run's logs; choose another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / "config.json", json.dumps(config, indent=2, sort_keys=True).encode())
        self.flush_every = flush_every
        self._tables: dict[str, list[pa.Table]] = {"rounds": [], "clients": []}
        self._schemas = {"rounds": ROUNDS_SCHEMA, "clients": CLIENTS_SCHEMA}
        self._pending_rounds = 0

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        schema = self._schemas[name]
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

    def flush(self) -> None:
        for name, parts in self._tables.items():
            table = pa.concat_tables(parts) if parts else self._schemas[name].empty_table()
            self._tables[name] = [table]
            tmp = self.dir / f"{name}.parquet.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.dir / f"{name}.parquet")
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
