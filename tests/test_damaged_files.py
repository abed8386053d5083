"""Damaged files and full disks (docs/algorithms.md §10): a checkpoint is verified data, a
damaged newest one is named and the newest intact one used, nothing of a run is rewritten from
unverified state, every file read is checked where it is read, and a full disk stops the run at
its last complete checkpoint with a plain message and no temporary file."""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest

from fedlora_ray import atomic_write
from fedlora_ray.engine.serial import resume_serial, run_serial
from fedlora_ray.report import load_run
from fedlora_ray.run_errors import DamagedFileError, DiskFullError
from fedlora_ray.rundir import read_log, tensor_file
from fedlora_ray.rundir.checkpoint import CHECKPOINT_DIR, checkpoint_round, checkpoints
from tests.conftest import tiny_config
from tests.resume_helpers import assert_same_run

# 8 rounds, a checkpoint every 2 (the newest 2 kept: rounds 6 and 8), the logs in parts of 3
# rounds, SOFT with error feedback and a client store of no RAM: every client state is a file.
RUN = [
    "federation.rounds=8", "checkpoint.every=2", "checkpoint.keep=2", "federation.eval_every=4",
    "log.part_rounds=3", "compression.method=soft", "compression.keep_ratio=0.2",
    "compression.error_feedback=true", "runtime.client_store_mem_mb=0",
]  # fmt: skip


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file of a folder (hidden ones too) with its content's hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def one_go(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-go") / "run"
    run_serial(tiny_config(*RUN), out)
    return out


@pytest.fixture
def finished(one_go, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    out = tmp_path / "run"
    shutil.copytree(one_go, out)
    return out


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    path.write_bytes(bytes(data))


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_every_byte_of_a_checkpoint_is_covered_by_its_check(finished):
    newest = checkpoints(finished)[-1]
    data = newest.read_bytes()
    for where in range(0, len(data), max(1, len(data) // 97)):  # ~100 positions, header and tensors
        damaged = bytearray(data)
        damaged[where] ^= 0x01
        with pytest.raises(ValueError):
            tensor_file.decode_tensor_file(bytes(damaged), "checkpoint", None)


@pytest.mark.parametrize("damage", [flip_byte, cut_short, "client-file"])
def test_a_damaged_newest_checkpoint_is_named_and_the_run_resumes_from_the_intact_one(
    damage, finished, one_go, tmp_path, capsys
):
    """A finished run whose newest checkpoint (round 8) is damaged, resumed: the damage is named,
    the run goes on from round 6 and rewrites rounds 7-8, and ends identical to the run in one
    go; the adapter is rewritten from verified state only."""
    newest = checkpoints(finished)[-1]
    assert checkpoint_round(newest) == 8
    if damage == "client-file":  # a client-state file the newest checkpoint alone refers to
        gone = sorted((finished / "client_store").rglob("*-000008.safetensors"))[0]
        gone.unlink()
    else:
        damage(newest)
    resume_serial(finished)
    said = capsys.readouterr().out
    assert f"checkpoint {newest} is damaged" in said and "round-000006.safetensors, the newest intact" in said
    assert (finished / CHECKPOINT_DIR / "damaged" / newest.name).is_file()  # kept for the user, aside
    assert_same_run(finished, one_go)
    assert [checkpoint_round(p) for p in checkpoints(finished)] == [6, 8]


def test_with_no_intact_checkpoint_a_resume_refuses_and_changes_nothing(finished):
    for path in checkpoints(finished):
        flip_byte(path, 0.9)
    before = fingerprint(finished)
    with pytest.raises(DamagedFileError, match="no checkpoint of the run is intact") as err:
        resume_serial(finished, ["federation.rounds=10"])
    assert "round-000008.safetensors" in str(err.value) and "checksum mismatch" in str(err.value)
    assert fingerprint(finished) == before  # config.json, logs and adapter untouched


def test_a_crafted_pickle_is_never_loaded(finished, tmp_path):
    """A pickle that would create a file when loaded, placed as the newest checkpoint under both
    names: the old format is refused by its name, the new name fails its check; neither runs it."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    crafted = pickle.dumps({"format": 1, "round": 9, "state": Payload()})
    old_name = finished / CHECKPOINT_DIR / "round-000009.pt"
    old_name.write_bytes(crafted)
    with pytest.raises(DamagedFileError, match="format 1 .* never loads a pickle") as err:
        resume_serial(finished, ["federation.rounds=10"])
    assert "round-000009.pt" in str(err.value) and "0.1.0" in str(err.value)
    old_name.unlink()
    (finished / CHECKPOINT_DIR / "round-000009.safetensors").write_bytes(crafted)
    for path in checkpoints(finished)[:-1]:
        flip_byte(path)  # no intact one to fall back on: the crafted file is the only candidate
    with pytest.raises(DamagedFileError, match="not a readable safetensors file"):
        resume_serial(finished, ["federation.rounds=10"])
    assert not marker.exists()


def test_a_damaged_config_json_is_written_again_from_the_checkpoint(finished, one_go, capsys):
    good = (finished / "config.json").read_text()
    (finished / "config.json").write_text(good[: len(good) // 2])
    resume_serial(finished)
    assert "config.json was damaged (not valid JSON" in capsys.readouterr().err
    assert json.loads((finished / "config.json").read_text()) == json.loads(good)
    assert_same_run(finished, one_go)


def test_a_damaged_config_json_without_an_intact_checkpoint_is_named(finished):
    (finished / "config.json").write_text('{"federation": ')
    for path in checkpoints(finished):
        cut_short(path)
    with pytest.raises(DamagedFileError, match="config.json: not valid JSON .* restore the file from a copy"):
        resume_serial(finished)


def test_a_damaged_log_part_is_named_by_readers_and_rewritten_by_a_resume(finished, one_go):
    """Parts of 3 rounds: part 7 holds rounds 7-8, after the newest checkpoint but one. A reader
    names it; with the newest checkpoint damaged too, a resume from round 6 writes it anew."""
    part = finished / "rounds.parquet" / "part-000007.parquet"
    cut_short(part)
    with pytest.raises(DamagedFileError, match="part-000007.parquet: not a readable Parquet file") as err:
        load_run(finished)
    assert "a resume rewrites the rounds after" in str(err.value).lower()
    cut_short(finished / "clients.parquet" / "part-000001.parquet")
    with pytest.raises(DamagedFileError, match="clients.parquet/part-000001.parquet"):
        read_log(finished, upto=6)  # part 7 of rounds.parquet is not read: it holds rounds after 6
    shutil.copy(one_go / "clients.parquet" / "part-000001.parquet", finished / "clients.parquet")
    flip_byte(checkpoints(finished)[-1])
    resume_serial(finished)
    assert_same_run(finished, one_go)


def test_a_damaged_client_state_file_is_named_where_it_is_read(finished):
    from fedlora_ray.engine.client_store import ClientStateFiles

    files = ClientStateFiles(finished / "client_store")
    client, version = sorted(files.stored())[0]
    flip_byte(files.path(client, version))
    with pytest.raises(DamagedFileError, match=rf"{client:07d}-{version:06d}.safetensors: checksum mismatch"):
        files.read(client, version)


def test_a_full_disk_is_said_plainly_before_a_checkpoint_and_resume_continues_exactly(
    one_go, tmp_path, monkeypatch
):
    """The disk 'fills' after round 4's checkpoint: the next write (a client state or a log
    part of round 5) is refused before a byte is written, naming the file and the bytes it needs;
    no temporary file stays. Resumed with room again (a bigger disk), the run ends identical to
    the run in one go."""
    out = tmp_path / "run"
    real = atomic_write.free_bytes
    fourth = out / CHECKPOINT_DIR / "round-000004.safetensors"
    monkeypatch.setattr(atomic_write, "free_bytes", lambda folder: 0 if fourth.exists() else real(folder))
    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*MB needed") as err:
        run_serial(tiny_config(*RUN), out)
    assert str(out) in str(err.value)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))
    assert [checkpoint_round(p) for p in checkpoints(out)] == [2, 4]
    monkeypatch.undo()
    resume_serial(out)
    assert_same_run(out, one_go)


def test_a_write_that_fails_with_enospc_names_its_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(tensor_file, "open", full, raising=False)
    target = tmp_path / "ck" / "round-000001.safetensors"
    with pytest.raises(DiskFullError, match=r"while writing .*round-000001.safetensors \(0.0 MB needed"):
        tensor_file.write_tensor_file(target, {"x": 1}, "checkpoint")
    assert list(target.parent.iterdir()) == []


def test_a_flipped_byte_in_a_log_part_is_named_or_changes_no_value(one_go, tmp_path):
    """Parts carry Parquet's page checksums: wherever a byte flips, the part either reads back
    the same rows (the byte was in unread metadata) or is named as damaged; never other numbers."""
    from fedlora_ray.rundir.run_log import read_parquet

    good = one_go / "clients.parquet" / "part-000001.parquet"
    want = read_parquet(good)
    data = good.read_bytes()
    named = 0
    for where in range(0, len(data), max(1, len(data) // 600)):  # ~600 positions: footer types too
        damaged = bytearray(data)
        damaged[where] ^= 0x10
        path = tmp_path / "part-000001.parquet"
        path.write_bytes(bytes(damaged))
        try:
            got = read_parquet(path)
        except DamagedFileError:
            named += 1
            continue
        assert got.equals(want), f"a flip at byte {where} changed the rows silently"
    assert named > 300  # most bytes are data, page headers and the footer, all checked


def test_the_file_errors_cross_a_process_boundary_whole():
    """A Ray actor's error reaches the launcher pickled: both errors keep their fields."""
    damaged = pickle.loads(pickle.dumps(DamagedFileError("/r/x.parquet", "cut short", "resume it")))
    assert (damaged.path, damaged.problem, damaged.remedy) == ("/r/x.parquet", "cut short", "resume it")
    assert str(damaged) == "/r/x.parquet: cut short; resume it"
    full = pickle.loads(pickle.dumps(DiskFullError("/r/ck", 5_000_000, 1_000)))
    assert (full.path, full.needed_bytes, full.errno) == ("/r/ck", 5_000_000, errno.ENOSPC)
    assert "while writing /r/ck (5.0 MB needed, 0.0 MB free)" in str(full)


def test_the_cli_names_a_damaged_run_in_one_line(finished, capsys):
    from actors.cli import main

    for path in checkpoints(finished):
        cut_short(path)
    before = fingerprint(finished)
    assert main(["resume", str(finished)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "no checkpoint of the run is intact" in err
    cut_short(finished / "rounds.parquet" / "part-000001.parquet")
    assert main(["compare", str(finished)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "part-000001.parquet: not a readable Parquet file" in err
    assert fingerprint(finished) == before | {
        "rounds.parquet/part-000001.parquet": fingerprint(finished)["rounds.parquet/part-000001.parquet"]
    }


def test_the_cli_says_a_full_disk_plainly(tmp_path, monkeypatch, capsys):
    from actors.cli import main

    monkeypatch.setattr(atomic_write, "free_bytes", lambda folder: 0)
    out = tmp_path / "run"
    code = main(["run", "jobs/configs/smoke.yaml", "--out", str(out), "--set", "runtime.backend=serial"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert "no space left on device while writing" in err and "MB needed" in err
    assert not list(tmp_path.rglob("*.tmp"))
