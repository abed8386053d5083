"""A run directory: config.json, rounds.parquet/, clients.parquet/, profile.parquet.

rounds.parquet and clients.parquet are folders of part files, ``part-FFFFFF.parquet`` holding
rounds FFFFFF .. FFFFFF + log.part_rounds - 1: one logical dataset each, which pandas and pyarrow
read by the folder's path and duckdb and polars with the glob ``rounds.parquet/*.parquet``. Only
the open part is ever rewritten, so a flush costs at most ``part_rounds`` rounds of rows however
long the run, and only the open part's rows are held in memory.

Each flush writes the dirty parts through hidden temporary files and atomic renames: clients
first, then rounds. The rename of a rounds part is the commit point of the rounds it holds: a
round is logged when rounds.parquet holds it, and clients.parquet may briefly hold rows of one
round more (a kill between two renames). ``read_log`` and resume respect this, so the two
datasets always agree as read. Rows are checked against the fixed schemas as they arrive, and
every row carries the run's ``run_id`` so that many runs can be queried as one table.

Every part is written with Parquet's page checksums and a checksum of its rows in its footer
(``fedlora_ray.sha256``, which covers what the page checksums do not: the footer's names and
types), and read with both checked, so a damaged part is named (``DamagedFileError``: the file,
what is wrong, what to do), never read as other numbers.
A flush first checks that the disk has room for what it writes [docs/algorithms.md §10].
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedlora_ray.atomic_write import atomic_path, write_bytes
from fedlora_ray.run_errors import DamagedFileError
from fedlora_ray.rundir.schema import CLIENTS_SCHEMA, PROFILE_SCHEMA, ROUNDS_SCHEMA

_SCHEMAS = {"rounds": ROUNDS_SCHEMA, "clients": CLIENTS_SCHEMA}
_PART = "part-{:06d}.parquet"


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns added since the file was written come back as nulls."""
    return pa.Table.from_pylist(table.to_pylist(), schema=schema) if table.schema != schema else table


def part_files(path: Path) -> list[Path]:
    """The part files of one logged table, in round order ([path] for the single file of a
    run written before logs had parts)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.name.startswith("part-") and p.suffix == ".parquet")


def part_start(part: Path) -> int:
    """The first round a part file holds, from its name (1 for the single file of the older
    layout)."""
    return int(part.stem.split("-")[1]) if part.name.startswith("part-") else 1


DAMAGED_LOG_REMEDY = (
    "its rounds are lost from the log. A resume rewrites the rounds after the run's newest intact "
    "checkpoint; to rewrite them all, run the run's config.json again into a new folder (the same "
    "config and seed give the same rows)"
)


_DIGEST_KEY = b"fedlora_ray.sha256"


def rows_digest(table: pa.Table) -> str:
    """A checksum of a table's rows: each column's name, type, nulls and values."""
    h = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns):
        array = column.combine_chunks()
        h.update(f"\0{name}\0{array.type}\0".encode())
        h.update(array.is_null().to_numpy(zero_copy_only=False).tobytes())
        if pa.types.is_boolean(array.type):
            array = array.cast(pa.int8())
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            h.update("\0".join(array.fill_null("").to_pylist()).encode())
        elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
            # numbers (booleans as int8): nulls counted above, their slots as 0
            h.update(array.fill_null(pa.scalar(0).cast(array.type)).to_numpy(zero_copy_only=False).tobytes())
        else:  # no column of the schemas: only a damaged footer claims such a type
            h.update(repr(array.to_pylist()).encode())
    return h.hexdigest()


def write_parquet(table: pa.Table, path: Path) -> None:
    """``table`` as a Parquet file with page checksums and its rows' checksum in the footer."""
    meta = {**(table.schema.metadata or {}), _DIGEST_KEY: rows_digest(table).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, write_page_checksum=True)


def read_parquet(path: Path, remedy: str = DAMAGED_LOG_REMEDY) -> pa.Table:
    """One Parquet file of a run, its page checksums and rows' checksum checked (files written
    before the rows' checksum have only theirs): DamagedFileError when it cannot be read whole
    and unchanged."""
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except FileNotFoundError:
        raise DamagedFileError(path, "missing", remedy) from None
    except (OSError, pa.ArrowException) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DamagedFileError(path, f"not a readable Parquet file ({problem})", remedy) from None
    meta = dict(table.schema.metadata or {})
    want = meta.pop(_DIGEST_KEY, None)
    try:
        same = want is None or rows_digest(table).encode() == want
    except (pa.ArrowException, ValueError, TypeError, UnicodeDecodeError) as err:  # a footer that lies
        raise DamagedFileError(path, f"its rows cannot be checked ({err})", remedy) from None
    if not same:
        raise DamagedFileError(path, "checksum mismatch: its rows changed after they were written", remedy)
    return table.replace_schema_metadata(meta or None)


def _read(path: Path, schema: pa.Schema, upto: int | None = None) -> pa.Table:
    """The rows of a logged table; with ``upto``, only the parts that can hold rounds up to it
    are read."""
    files = [p for p in part_files(path) if upto is None or part_start(p) <= upto]
    parts = [_conform(read_parquet(p), schema) for p in files]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def read_log(run_dir: str | Path, upto: int | None = None) -> tuple[pa.Table, pa.Table]:
    """(rounds, clients) as committed: clients rows only of rounds that rounds.parquet holds,
    and none past ``upto`` (the parts after it are not read)."""
    run_dir = Path(run_dir)
    rounds = _read(run_dir / "rounds.parquet", ROUNDS_SCHEMA, upto)
    clients = _read(run_dir / "clients.parquet", CLIENTS_SCHEMA, upto)
    last = max(rounds["round"].to_pylist(), default=0)
    if upto is not None:
        last = min(last, upto)
        rounds = rounds.filter(pc.less_equal(rounds["round"], last))
    return rounds, clients.filter(pc.less_equal(clients["round"], last))


def read_rounds(run_dir: str | Path) -> pa.Table:
    """The rounds logged so far (of a running run too: every part is replaced whole)."""
    return _read(Path(run_dir) / "rounds.parquet", ROUNDS_SCHEMA)


def has_logs(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run's round log (in parts, or as one older file)."""
    return bool(part_files(Path(run_dir) / "rounds.parquet"))


class RunLog:
    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        flush_every: int = 1,
        resume_round: int | None = None,
    ) -> None:
        """A new run directory, or with ``resume_round`` an existing one whose logs are cut back
        to that round (rows past it are dropped, so the resumed run adds no gap or duplicate).
        ``config`` is the run's config as a dict: its ``log.part_rounds`` and ``log.run_id``
        (empty: the folder's name) are used here, and the resolved run_id is stored in it."""
        self.dir = Path(run_dir)
        self.flush_every = flush_every
        log_cfg = dict(config.get("log", {}))
        self.part_rounds = int(log_cfg.get("part_rounds", 100))
        self.run_id = str(log_cfg.get("run_id") or self.dir.resolve().name)
        if "log" in config:
            config = {**config, "log": {**log_cfg, "run_id": self.run_id}}
        self.config = config  # as config.json holds it (and every checkpoint)
        self._pending_rounds = 0
        self.rounds_logged = 0  # rounds committed to disk
        self._history: list[dict[str, Any]] = []  # every round's row: small, the run reports from it
        # the rows of parts not yet closed, per table and part start round
        self._open: dict[str, dict[int, list[pa.Table]]] = {name: {} for name in _SCHEMAS}
        if resume_round is None:
            if has_logs(self.dir):
                raise FileExistsError(f"{self.dir} already holds a run's logs; choose another --out")
            self.dir.mkdir(parents=True, exist_ok=True)
            write_bytes(self.dir / "config.json", json.dumps(config, indent=2, sort_keys=True).encode())
            return
        self._cut_back(resume_round)

    def _part_start(self, round_: int) -> int:
        return (round_ - 1) // self.part_rounds * self.part_rounds + 1

    def _cut_back(self, resume_round: int) -> None:
        """Keep the committed rows up to ``resume_round``: later parts go, the part holding it
        is reopened with its rows, and a log of the older single-file layout becomes parts."""
        for stale in [*self.dir.glob("*.tmp"), *self.dir.glob("*.parquet/.*.tmp")]:
            stale.unlink()
        rounds, clients = read_log(self.dir, upto=resume_round)
        self._history = rounds.to_pylist()
        self.rounds_logged = len(self._history)
        open_start = self._part_start(resume_round + 1)
        for name, table in (("rounds", rounds), ("clients", clients)):
            path = self.dir / f"{name}.parquet"
            if path.is_file():  # the older layout: rewritten as parts once, beside it, then swapped
                with atomic_path(path, folder=True) as staged:
                    for start in sorted({self._part_start(r) for r in table["round"].to_pylist()}):
                        part = self._rows_of_part(table, start)
                        write_parquet(part, staged / _PART.format(start))
                    path.unlink()  # the parts, whole, take the single file's place
            elif path.is_dir():
                for part in part_files(path):
                    if part_start(part) >= open_start:
                        part.unlink()
            self._open[name][open_start] = [self._rows_of_part(table, open_start)]
        self.flush()

    def _rows_of_part(self, table: pa.Table, start: int) -> pa.Table:
        rounds = table["round"]
        mask = pc.and_(pc.greater_equal(rounds, start), pc.less(rounds, start + self.part_rounds))
        return table.filter(mask)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """Every logged row of a table (rounds: kept in memory; clients: read back from disk)."""
        if name == "rounds":
            return list(self._history)
        self.flush()
        return read_log(self.dir)[1].to_pylist()

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        schema = _SCHEMAS[name]
        for row in rows:
            extra = set(row) - set(schema.names)
            if extra:
                raise KeyError(f"{name}.parquet has no column(s) {sorted(extra)}")
        by_part: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_part.setdefault(self._part_start(int(row["round"])), []).append({**row, "run_id": self.run_id})
        for start, part_rows in by_part.items():
            self._open[name].setdefault(start, []).append(pa.Table.from_pylist(part_rows, schema=schema))

    def append_round(self, round_row: dict[str, Any], client_rows: list[dict[str, Any]]) -> None:
        """Add one finished round; flush every ``flush_every`` rounds."""
        self._append("rounds", [round_row])
        self._append("clients", client_rows)
        self._history.append({**round_row, "run_id": self.run_id})
        self._pending_rounds += 1
        if self._pending_rounds >= self.flush_every:
            self.flush()

    def _write_part(self, name: str, start: int, table: pa.Table) -> None:
        # the rows' size in memory bounds the compressed file's
        with atomic_path(self.dir / f"{name}.parquet" / _PART.format(start), needed=table.nbytes) as tmp:
            write_parquet(table, tmp)

    def flush(self) -> None:
        """Write the open parts; rounds last, whose renames commit the rounds they hold. A part
        whose last round is written leaves memory."""
        for name in ("clients", "rounds"):
            for start, tables in sorted(self._open[name].items()):
                table = pa.concat_tables(tables)
                self._open[name][start] = [table]
                self._write_part(name, start, table)
        self.rounds_logged = len(self._history)
        newest = self._history[-1]["round"] if self._history else 0
        for name in _SCHEMAS:
            for start in [s for s in self._open[name] if s + self.part_rounds - 1 <= newest]:
                del self._open[name][start]
        self._pending_rounds = 0

    def write_profile(self, columns: dict[str, Any]) -> None:
        """profile.parquet, once: every client's resources and the run's q_i and s_i, given as
        columns (arrays of one entry per client)."""
        n = len(columns["client_id"])
        arrays = [
            pa.array([self.run_id] * n, pa.string())
            if field.name == "run_id"
            else pa.array(columns[field.name], type=field.type)
            for field in PROFILE_SCHEMA
        ]
        table = pa.Table.from_arrays(arrays, schema=PROFILE_SCHEMA)
        with atomic_path(self.dir / "profile.parquet", needed=table.nbytes) as tmp:
            write_parquet(table, tmp)

    def write_json(self, filename: str, obj: Any) -> None:
        write_bytes(self.dir / filename, json.dumps(obj, indent=2, sort_keys=True).encode())

    def close(self) -> None:
        self.flush()
