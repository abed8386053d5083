"""The driver's store of per-client state (the error-feedback memory), in bounded memory
[ours; docs/algorithms.md §10].

A ``ClientStore`` is an immutable mapping client id -> that client's state dict, one snapshot
per round. Every state carries a version, the round that wrote it. States stay in RAM while
their tensors total at most ``runtime.client_store_mem_mb``; every further one is written at once
to a file named by its client and version, under RUN_DIR/client_store/. A checkpoint first writes
the RAM states changed since the previous checkpoint to their files too, and then holds only the
index client -> version: its cost grows with the clients a checkpoint interval touched, not with
N, and no state is ever stored twice. A file is a tensor file (safetensors with a checksum, no
pickle), checked whenever it is read. Files are written once and never changed, through a
temporary file and a rename, and they reach the disk before the checkpoint that refers to them,
so a checkpoint of round t always finds whole files of exactly round t's states, whatever later
rounds wrote. A resumed run starts with every state on disk and reads each back when its client
is next sampled.

``updated`` returns the next snapshot in O(changed clients), not O(clients): the newest snapshot
owns the index, and building on it hands the index over to the new one, leaving the old one a
record of what it held before (an undo log). The old snapshot stays valid (the round's callbacks
may still refuse the new state) and is read through that record.

Garbage collection (``ClientStateFiles``): a file whose client got a newer version is deleted once
the round that replaced it is accepted (the next round builds on it), unless a kept checkpoint
still refers to it; it then goes when that checkpoint is deleted. The folder holds at most one
file per client, the replaced files the ``checkpoint.keep`` checkpoints still hold, and one
round's replaced files. A resumed run first deletes what the killed run wrote after its
checkpoint.

Without a run directory (an in-memory run, a test), the states beyond the budget go to a
temporary folder, deleted with the last snapshot that uses it.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import shutil
import tempfile
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from fedlora_ray.rundir.tensor_file import read_tensor_file, write_tensor_file

CLIENT_STORE_DIR = "client_store"
_SHARD = 1000  # clients per sub-folder: no folder grows past a few thousand files
_FILE = re.compile(r"^(\d+)-(\d+)\.safetensors$")
_KIND = "client-state"
_BYTES_PER_MB = 1_000_000

# A client's entry in the index: (version, state) for a state held in RAM, or the version alone
# for one held only in its file.
Entry = tuple[int, dict[str, Any]] | int


class _Absent:
    """In an undo record: the client had no state in that snapshot."""


_ABSENT = _Absent()


def version_of(entry: Entry) -> int:
    return entry if isinstance(entry, int) else entry[0]


def state_nbytes(state: Any) -> int:
    """The bytes of the tensors (and numpy arrays) in a state: dicts, lists and tuples walked."""
    total, stack = 0, [state]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            total += obj.element_size() * obj.nelement()
        elif isinstance(obj, dict):
            stack += obj.values()
        elif isinstance(obj, (list, tuple)):
            stack += obj
        else:
            total += int(getattr(obj, "nbytes", 0))
    return total


@functools.cache
def _libc_syncfs() -> Any:
    return getattr(ctypes.CDLL(None), "syncfs", None) if os.name == "posix" else None


def _sync_filesystem(folder: Path, paths: list[Path]) -> None:
    """``paths`` and their renames on the disk: one syncfs(2) of the folder's file system where
    the C library has it (a few ms here for hundreds of files), else an fsync per file and
    folder (a few ms each)."""
    libc_syncfs = _libc_syncfs()
    if libc_syncfs is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if libc_syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for target in [*paths, *{p.parent for p in paths}]:
        try:
            fd = os.open(target, os.O_RDONLY)
        except FileNotFoundError:  # already replaced and deleted
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ClientStateFiles:
    """The versioned state files of one store: ``FOLDER/SSSS/CCCCCCC-RRRRRR.safetensors`` holds client C's
    state as round R left it (SSSS = C // 1000). Knows which RAM states are not in a file yet,
    which replaced files a kept checkpoint still needs, and deletes the others once it is safe."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder  # None: a temporary folder, made at the first write
        self._shards: set[Path] = set()  # sub-folders known to exist
        self._unsynced: list[Path] = []  # written since the last ``sync``
        self.dirty: set[int] = set()  # clients given a RAM state since the last checkpoint
        self._pending: list[tuple[int, Path]] = []  # (round whose acceptance frees it, file)
        # checkpoint round -> the replaced files it holds, each with the round that replaced it
        self._pinned: dict[int, list[tuple[int, Path]]] = defaultdict(list)
        self._kept: list[int] = []  # rounds of the checkpoints on disk

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="fedlora-client-store-"))
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        return self._folder

    def path(self, client: int, version: int) -> Path:
        return self.folder / f"{client // _SHARD:04d}" / f"{client:07d}-{version:06d}.safetensors"

    def write(self, client: int, version: int, state: dict[str, Any]) -> None:
        """Whole or not at all: a temporary file, renamed (a killed run leaves only the
        temporary file, which a resume deletes)."""
        path = self.path(client, version)
        if path.parent not in self._shards:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._shards.add(path.parent)
        # not durable here: ``sync`` flushes every file written since, once per checkpoint
        write_tensor_file(path, state, _KIND, durable=False)
        self._unsynced.append(path)

    def read(self, client: int, version: int) -> dict[str, Any]:
        """Client ``client``'s state of round ``version``, checked (DamagedFileError when its file
        is missing, cut short or changed)."""
        remedy = (
            f"client {client}'s state of round {version} is lost; resume the run: it falls back to "
            "the newest checkpoint whose client-state files are all intact"
        )
        state: dict[str, Any] = read_tensor_file(self.path(client, version), _KIND, remedy=remedy)
        return state

    def sync(self) -> None:
        """The files written since the last call reach the disk (before a checkpoint refers to
        them: a crash of the machine then cannot lose one)."""
        if self._unsynced:
            _sync_filesystem(self.folder, self._unsynced)
            self._unsynced.clear()

    def replaced(self, round_: int, client: int, version: int) -> None:
        """Round ``round_`` gave ``client`` a newer state than its ``version`` (whose file may
        exist). A kept checkpoint of a round in [version, round_) refers to that file: the
        newest such keeps it (checkpoints are deleted oldest first). Otherwise only the
        snapshot before round_ may, and the file goes once round_'s snapshot is accepted."""
        path = self.path(client, version)
        holders = [s for s in self._kept if version <= s < round_]
        if holders:
            self._pinned[max(holders)].append((round_, path))
        else:
            self._pending.append((round_, path))

    def accepted(self, round_: int) -> None:
        """The snapshot of ``round_`` is the run's state: files replaced up to it are free."""
        if not self._pending:
            return
        keep = []
        for when, path in self._pending:
            if when <= round_:
                path.unlink(missing_ok=True)
            else:
                keep.append((when, path))
        self._pending = keep

    def checkpointed(self, round_: int, kept: Iterable[int]) -> None:
        """A checkpoint of ``round_`` is complete and ``kept`` are the rounds of the checkpoints
        left on disk: the files only deleted checkpoints held go as soon as no snapshot that
        may still be used holds them (the one before ``round_`` was accepted: round_ built on it)."""
        self._kept = sorted(kept)
        for s in [s for s in self._pinned if s not in self._kept]:
            self._pending += self._pinned.pop(s)
        self.accepted(round_ - 1)

    def stored(self) -> list[tuple[int, int]]:
        """(client, version) of every file on disk."""
        if self._folder is None or not self._folder.is_dir():
            return []
        found = []
        for shard in self._folder.iterdir():
            if shard.is_dir():
                names = (_FILE.match(p.name) for p in shard.iterdir())
                found += [(int(m.group(1)), int(m.group(2))) for m in names if m]
        return found

    def recover(self, round_: int, live: Mapping[int, int], kept: Iterable[int]) -> None:
        """A run resumed from its checkpoint of ``round_``, whose index is ``live`` (client ->
        version): rebuild what the killed process knew, in one pass over the folder. Files past
        round_ and half-written temporary files are what the killed run left: deleted. Of the
        rest, the newest file of a client up to an earlier kept checkpoint's round is the one
        that checkpoint holds (a checkpoint has every state in a file): kept for it. Every other
        file is deleted."""
        self._kept = sorted(s for s in kept if s <= round_)
        self._pending.clear()
        self._pinned.clear()
        self.dirty.clear()
        folder = self.folder
        if folder.is_dir():
            for stray in folder.glob("*/.*.tmp"):
                stray.unlink(missing_ok=True)
        versions: dict[int, list[int]] = defaultdict(list)
        for client, version in self.stored():
            versions[client].append(version)
        missing = [c for c, v in live.items() if v not in versions.get(c, ())]
        if missing:
            raise FileNotFoundError(
                f"{folder}: the checkpoint of round {round_} refers to client states that are not "
                f"there (clients {missing[:10]}{' ...' if len(missing) > 10 else ''})"
            )
        earlier = [s for s in self._kept if s < round_]
        for client, found in versions.items():
            found.sort()
            owner: dict[int, int] = {}  # version -> the newest earlier checkpoint that may hold it
            for s in earlier:
                held = [v for v in found if v <= s]
                if held and held[-1] != live.get(client):
                    owner[held[-1]] = s
            for version in found:
                if version in owner:  # no snapshot of this process holds it: free with its checkpoint
                    self._pinned[owner[version]].append((0, self.path(client, version)))
                elif version != live.get(client):  # past round_, or held by nothing
                    self.path(client, version).unlink()
        self._shards = {p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


class ClientStore(Mapping[int, dict[str, Any]]):
    """One round's per-client states: ``store[i]`` is client i's state dict (read from its file
    when it is not in RAM). Immutable; ``updated`` makes the next round's. ``ClientStore()``
    is an empty store without a RAM limit (its files, if any, in a temporary folder)."""

    def __init__(
        self,
        files: ClientStateFiles | None = None,
        budget_bytes: float = math.inf,
        entries: dict[int, Entry] | None = None,
        ram_bytes: int = 0,
    ) -> None:
        self._files: ClientStateFiles | None = files if files is not None else ClientStateFiles(None)
        self.budget_bytes = budget_bytes
        self.ram_bytes = ram_bytes  # bytes of the states this snapshot holds in RAM
        # the newest snapshot owns the index; an older one holds a newer one and an undo record
        self._entries: dict[int, Entry] | None = {} if entries is None else entries
        self._newer: ClientStore | None = None
        self._undo: dict[int, Entry | _Absent] = {}

    # ---- making stores
    @classmethod
    def create(cls, folder: Path | None, mem_mb: float) -> ClientStore:
        """An empty store with ``mem_mb`` (``runtime.client_store_mem_mb``) of RAM, with its
        files in ``folder`` (a temporary folder when None)."""
        return cls(ClientStateFiles(folder), mem_mb * _BYTES_PER_MB)

    @classmethod
    def resume(
        cls, saved: ClientStore, folder: Path | None, mem_mb: float, round_: int, kept: Iterable[int] = ()
    ) -> ClientStore:
        """The store of a checkpoint of ``round_`` (``saved``: its index), every state in its file
        under ``folder``; ``kept`` are the rounds of the run's checkpoints, whose files stay."""
        files = ClientStateFiles(folder)
        live = saved.versions()
        if folder is not None:
            files.recover(round_, live, kept)
        return cls(files, mem_mb * _BYTES_PER_MB, dict[int, Entry](live))

    def updated(self, round_: int, states: Mapping[int, dict[str, Any]]) -> ClientStore:
        """The snapshot after round ``round_``, which left ``states`` (client -> new state).
        Building on this snapshot (of round_ - 1) accepts it. A state stays in RAM if it fits
        in the budget beside the others, else goes to its file at once."""
        files = self._files_or_fail()
        if self._newer is not None:  # an older snapshot built on again (a round retried): copy
            entries = self._materialise()
            files.dirty.update(c for c, e in entries.items() if not isinstance(e, int))
            return ClientStore(files, self.budget_bytes, entries, self.ram_bytes).updated(round_, states)
        files.accepted(round_ - 1)
        entries_now = self._entries
        assert entries_now is not None
        ram = self.ram_bytes
        fresh: dict[int, Entry] = {}  # the new entries, every file written before the index changes
        for client, state in states.items():
            old = entries_now.get(client)
            if isinstance(old, tuple):
                ram -= state_nbytes(old[1])
            size = state_nbytes(state)
            if ram + size <= self.budget_bytes:
                fresh[client], ram = (round_, state), ram + size
            else:
                files.write(client, round_, state)
                fresh[client] = round_
        undo: dict[int, Entry | _Absent] = {}
        for client, entry in fresh.items():
            old = entries_now.get(client)
            undo[client] = _ABSENT if old is None else old
            if old is not None and version_of(old) != round_:
                files.replaced(round_, client, version_of(old))
            if isinstance(entry, tuple):
                files.dirty.add(client)
            entries_now[client] = entry
        new = ClientStore(files, self.budget_bytes, entries_now, ram)
        self._entries, self._newer, self._undo = None, new, undo
        return new

    # ---- the mapping
    def _entry(self, client: int) -> Entry | None:
        node = self
        while node._newer is not None:
            if client in node._undo:
                old = node._undo[client]
                return None if isinstance(old, _Absent) else old
            node = node._newer
        assert node._entries is not None
        return node._entries.get(client)

    def _materialise(self) -> dict[int, Entry]:
        """This snapshot's whole index (the live dict itself for the newest: do not change it)."""
        chain = [self]
        while chain[-1]._newer is not None:
            chain.append(chain[-1]._newer)  # type: ignore[arg-type]
        newest = chain[-1]._entries
        assert newest is not None
        if len(chain) == 1:
            return newest
        entries = dict(newest)
        for node in reversed(chain[:-1]):
            for client, old in node._undo.items():
                if isinstance(old, _Absent):
                    entries.pop(client, None)
                else:
                    entries[client] = old
        return entries

    def _files_or_fail(self) -> ClientStateFiles:
        if self._files is None:
            raise RuntimeError("a client store read from a checkpoint needs ClientStore.resume first")
        return self._files

    def __getitem__(self, client: int) -> dict[str, Any]:
        entry = self._entry(client)
        if entry is None:
            raise KeyError(client)
        if isinstance(entry, int):
            return self._files_or_fail().read(client, entry)
        return entry[1]

    def __contains__(self, client: object) -> bool:
        return self._entry(client) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._materialise()))

    def __len__(self) -> int:
        return len(self._materialise())

    def __repr__(self) -> str:
        return f"ClientStore({len(self)} clients, {self.ram_bytes / _BYTES_PER_MB:.1f} MB in RAM)"

    # ---- files and checkpoints
    def versions(self) -> dict[int, int]:
        """client -> the round that wrote its state: what a checkpoint holds."""
        return {c: version_of(e) for c, e in self._materialise().items()}

    def disk_index(self) -> dict[int, int]:
        """client -> version of the states this snapshot holds only in their files."""
        return {c: e for c, e in self._materialise().items() if isinstance(e, int)}

    @property
    def files(self) -> ClientStateFiles:
        return self._files_or_fail()

    def persist(self) -> None:
        """Before a checkpoint of this snapshot: every state it holds is in its file, on the
        disk. Writes the RAM states given since the previous checkpoint (the files of older
        ones exist: that checkpoint wrote them)."""
        if self._files is None:
            return
        files = self._files
        for client in sorted(files.dirty):
            entry = self._entry(client)
            if isinstance(entry, tuple) and not files.path(client, entry[0]).exists():
                files.write(client, entry[0], entry[1])
        files.dirty.clear()
        files.sync()

    def checkpointed(self, round_: int, kept: Iterable[int]) -> None:
        """The checkpoint of ``round_`` is complete; ``kept``: the rounds of those on disk."""
        if self._files is not None:
            self._files.checkpointed(round_, kept)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (sent to another process) as its index client -> version alone, as a
        checkpoint holds it; ``persist`` first puts every state in its file, and
        ``ClientStore.resume`` finds them there."""
        return (restored_store, (self.versions(), self.budget_bytes))


def restored_store(versions: dict[int, int], budget_bytes: float) -> ClientStore:
    """A store known by its index alone (from a checkpoint): ``ClientStore.resume`` gives it its
    files."""
    store = ClientStore(None, budget_bytes, dict[int, Entry](versions))
    store._files = None  # found again by ``ClientStore.resume``
    return store
