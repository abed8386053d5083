"""Every file the project writes appears whole or not at all: one helper, one policy.

The content goes to a hidden temporary file beside the target (``.NAME.PID-RANDOM.tmp``: unique, so
processes writing the same file at once never share one, and hidden, so readers of the folder
skip it); then, for a durable write, the file's data reaches the disk (fsync) before the rename
makes it visible, and the folder's entry after. A failure removes the temporary file and leaves
the old target as it was. A run killed mid-write leaves only a ``.tmp`` file, which a resume
deletes.

``durable=False`` skips both fsyncs, for writes that a later batched sync covers (the client
store syncs its files once per checkpoint) or that only save time (caches).

A full disk is said plainly (``DiskFullError``: the path, and the bytes needed where the writer
knows them): ``needed`` bytes are checked against the free space before the write, and a write
that still fails with ENOSPC is reported the same way, its temporary file removed
[ours; docs/algorithms.md §10].
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from fedlora_ray.run_errors import DiskFullError

# Room left beyond a write's own bytes: the file system's metadata, and the next small write.
SPACE_MARGIN_BYTES = 1_000_000


def free_bytes(folder: Path) -> int:
    """Bytes free for this user on ``folder``'s file system (a function of its own: the tests
    fake a small disk through it)."""
    return shutil.disk_usage(folder).free


def check_space(target: str | os.PathLike[str], needed: int) -> None:
    """Raise DiskFullError, before anything is written, when ``target``'s disk lacks ``needed``
    bytes and a margin."""
    folder = Path(target).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = free_bytes(folder)
    if free < needed + SPACE_MARGIN_BYTES:
        raise DiskFullError(target, needed, free)


def is_disk_full(err: BaseException) -> bool:
    """An OSError of a full disk (or quota), however the library that wrote wrapped it."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    target: str | os.PathLike[str], *, durable: bool = True, folder: bool = False, needed: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path to write in place of ``target``; once the block ends without an
    error it replaces ``target``. With ``folder`` the temporary path is an empty folder, whose
    whole content replaces a folder ``target``. ``needed``: the bytes the write will take,
    checked against the free space first."""
    target = Path(target)
    if needed is not None:
        check_space(target, needed)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(target, needed) from None
        raise
    # not mkstemp: its files are private (0600); these keep the umask's permissions
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        if folder:
            tmp.mkdir()
        yield tmp
        if durable:
            for path in [*(p for p in tmp.rglob("*") if p.is_file()), tmp] if folder else [tmp]:
                fsync_path(path)
        if folder and target.is_dir():
            # a folder cannot be renamed over a full one: move the old aside, then drop it
            old = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        if durable:
            fsync_path(target.parent)
    except BaseException as err:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(target, needed) from None
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """``data`` as the whole content of ``target``."""
    with atomic_path(target, durable=durable, needed=len(data)) as tmp:
        tmp.write_bytes(data)
