"""Every file the project writes appears whole or not at all (fedlora_ray.atomic_write)."""

import os
import stat

import pytest

from fedlora_ray.atomic_write import atomic_path, write_bytes


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "file.json"
    write_bytes(target, b"one")
    write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "file.json"
    write_bytes(target, b"good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the disk filled up")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]


def test_files_keep_the_umasks_permissions(tmp_path):
    """Not mkstemp's private 0600: a run's logs are read by others on a shared cluster."""
    old = os.umask(0o022)
    try:
        write_bytes(tmp_path / "log.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "log.json").stat().st_mode) == 0o644


def test_a_folder_replaces_a_whole_folder(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")
    with atomic_path(target, folder=True) as tmp:
        assert tmp.is_dir() and tmp.name.startswith(".adapter.") and tmp.name.endswith(".tmp")
        (tmp / "weights.bin").write_bytes(b"new")
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    with pytest.raises(ValueError), atomic_path(target, folder=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"half")
        raise ValueError
    assert (target / "weights.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
