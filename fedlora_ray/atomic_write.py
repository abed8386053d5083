"""Every file the project writes appears whole or not at all: one helper, one policy.

The content goes to a hidden temporary file beside the target (``.NAME.PID-RANDOM.tmp``: unique, so
processes writing the same file at once never share one, and hidden, so readers of the folder
skip it); then, for a durable write, the file's data reaches the disk (fsync) before the rename
makes it visible, and the folder's entry after. A failure removes the temporary file and leaves
the old target as it was. A run killed mid-write leaves only a ``.tmp`` file, which a resume
deletes.

``durable=False`` skips both fsyncs, for writes that a later batched sync covers (the client
store syncs its files once per checkpoint) or that only save time (caches).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    target: str | os.PathLike[str], *, durable: bool = True, folder: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write in place of ``target``; once the block ends without an
    error it replaces ``target``. With ``folder`` the temporary path is an empty folder, whose
    whole content replaces a folder ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its files are private (0600); these keep the umask's permissions
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    if folder:
        tmp.mkdir()
    try:
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
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """``data`` as the whole content of ``target``."""
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_bytes(data)
