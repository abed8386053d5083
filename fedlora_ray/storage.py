"""Where a run's results go: a local folder, a mounted shared folder, or an object store.

``--out`` may be a path or a URI that pyarrow's filesystems open (s3://bucket/prefix,
gs://bucket/prefix, hdfs://..., file:///abs/path). A run on a URI writes a local staging copy
(rename-atomic, as for any local run folder) and ``Mirror.push`` copies every file that changed to
the URI after each round and at the end; each file is uploaded whole, so an object is always a
complete file. Resuming from a URI first pulls the folder back into staging.

Under `ray job submit` a relative path would land in the job's temporary working folder on the
head node, gone with the job: it is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from fedlora_ray.atomic_write import write_bytes
from fedlora_ray.config import ConfigError
from fedlora_ray.run_errors import DamagedFileError

URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "file", "abfs", "abfss")
_STAGING = Path(os.environ.get("FEDLORA_RAY_STAGING", Path.home() / ".cache" / "fedlora-ray" / "staging"))


def is_uri(text: str | os.PathLike[str]) -> bool:
    return "://" in str(text)


def under_job_submit() -> bool:
    """Whether this process is the entrypoint of a `ray job submit` job (Ray sets this variable
    for it, and for nothing else)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def check_out(text: str, flag: str = "--out") -> None:
    """Refuse, before any work, an output place that cannot hold results: an unknown URI scheme,
    or a relative path under `ray job submit`."""
    if is_uri(text):
        scheme = str(text).split("://", 1)[0].lower()
        if scheme not in URI_SCHEMES:
            raise ConfigError(
                f"{flag} {text!r}: the scheme {scheme!r} is not one pyarrow's filesystems open; use a "
                f"path, or one of {', '.join(s + '://' for s in URI_SCHEMES)}"
            )
        return
    if under_job_submit() and not Path(text).is_absolute():
        raise ConfigError(
            f"{flag} {text!r} is relative: under `ray job submit` it would land in the job's temporary "
            "working folder on the head node and vanish with the job. Give an absolute path on a folder "
            "every node mounts (e.g. /mnt/shared/runs/...), or an object-store URI (s3://bucket/runs/..., "
            "gs://bucket/runs/...)"
        )


def check_no_file_on_path(out: Path, flag: str = "--out") -> None:
    """Refuse a local output path with a file on its way: its first existing ancestor must be
    a folder."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {str(out)!r}: {str(parent)!r} is a file, not a folder")
            break


def check_folder_out(out: Path, what: str, flag: str = "--out") -> None:
    """Refuse a local output folder that is an existing file, or has a file on its way; ``what``
    names the folder in the message ("the run's folder")."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {str(out)!r} is an existing file; {flag} names {what}")
    check_no_file_on_path(out, flag)


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return filesystem, path.rstrip("/")


def staging_dir(uri: str) -> Path:
    """The local copy of a URI's run folder on this machine (one per URI)."""
    return _STAGING / hashlib.sha1(uri.encode()).hexdigest()[:16]


class Mirror:
    """A run folder at a URI, written through a local staging copy."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.remote = _filesystem(self.uri)
        self.local = staging_dir(self.uri)
        self._pushed: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last sent

    def pull(self) -> Path:
        """Make the staging copy equal the URI's folder (empty when the URI holds nothing yet)."""
        from pyarrow import fs

        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True)
        info = self.fs.get_file_info(self.remote)
        if info.type == fs.FileType.Directory:
            for entry in self.fs.get_file_info(fs.FileSelector(self.remote, recursive=True)):
                if entry.type != fs.FileType.File:
                    continue
                target = self.local / entry.path[len(self.remote) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.fs.open_input_stream(entry.path) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        self._pushed = {rel: stamp for rel, stamp in self._local_files().items()}
        return self.local

    def _local_files(self) -> dict[str, tuple[int, int]]:
        files = {}
        for path in self.local.rglob("*"):
            # temporary files are never sent: what a reader of the URI sees is always whole
            if path.is_file() and not path.name.endswith(".tmp") and not path.name.startswith("."):
                st = path.stat()
                files[str(path.relative_to(self.local))] = (st.st_size, st.st_mtime_ns)
        return files

    def push(self) -> int:
        """Send every file that changed since the last push and delete the ones gone locally
        (an old checkpoint, a cut-back log part); returns how many files were sent."""
        now = self._local_files()
        sent = 0
        self.fs.create_dir(self.remote, recursive=True)
        for rel, stamp in sorted(now.items()):
            if self._pushed.get(rel) == stamp:
                continue
            target = f"{self.remote}/{rel}"
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(self.local / rel, "rb") as src, self.fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst)
            sent += 1
        for rel in set(self._pushed) - set(now):
            self.fs.delete_file(f"{self.remote}/{rel}")
        self._pushed = now
        return sent


def read_text(place: str, name: str) -> str | None:
    """The text of file ``name`` in a folder or URI, or None when it is absent."""
    if not is_uri(place):
        path = Path(place) / name
        return path.read_text() if path.is_file() else None
    from pyarrow import fs

    filesystem, base = _filesystem(place)
    target = f"{base}/{name}"
    if filesystem.get_file_info(target).type != fs.FileType.File:
        return None
    with filesystem.open_input_stream(target) as src:
        return bytes(src.read()).decode()


def read_json(place: str, name: str, remedy: str = "") -> Any:
    """The JSON file ``name`` of a folder or URI, parsed (None when it is absent);
    DamagedFileError naming it when it cannot be read or parsed, or is not a JSON object."""
    where = join(place, name)
    try:
        text = read_text(place, name)
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedFileError(where, f"cannot be read ({err})", remedy) from None
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:  # JSONDecodeError: cut short, or bytes changed
        raise DamagedFileError(where, f"not valid JSON ({err})", remedy) from None
    if not isinstance(value, dict):
        raise DamagedFileError(where, f"holds a JSON {type(value).__name__}, not an object", remedy)
    return value


def list_names(place: str, folder: str) -> list[str]:
    """The file names in ``folder`` of a folder or URI ([] when it is absent)."""
    if not is_uri(place):
        path = Path(place) / folder
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    from pyarrow import fs

    if not folder:
        filesystem, base = _filesystem(place)
        selector = fs.FileSelector(base, allow_not_found=True)
        return sorted(info.base_name for info in filesystem.get_file_info(selector))
    filesystem, base = _filesystem(place)
    selector = fs.FileSelector(f"{base}/{folder}", allow_not_found=True)
    return sorted(info.base_name for info in filesystem.get_file_info(selector))


def write_file(place: str, name: str, data: bytes) -> None:
    """Write a whole file into a folder (temporary file, then rename) or a URI (one upload)."""
    if not is_uri(place):
        write_bytes(Path(place) / name, data)
        return
    filesystem, base = _filesystem(place)
    filesystem.create_dir(base, recursive=True)
    with filesystem.open_output_stream(f"{base}/{name}") as dst:
        dst.write(data)


def join(place: str, name: str) -> str:
    """``name`` inside a folder or URI."""
    return f"{place.rstrip('/')}/{name}" if is_uri(place) else str(Path(place) / name)


def remove_folder(place: str) -> None:
    """Delete a folder or a URI's folder with everything in it."""
    if not is_uri(place):
        shutil.rmtree(place, ignore_errors=True)
        return
    filesystem, base = _filesystem(place)
    filesystem.delete_dir_contents(base, missing_dir_ok=True)
