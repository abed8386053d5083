"""The driver's client store: RAM up to runtime.client_store_mem_mb, then versioned files; its
snapshots, its checkpoints and resume, and its garbage collection (docs/algorithms.md §10)."""

from __future__ import annotations

import gc
import pickle

import pytest
import torch

from fedlora_ray.engine.callbacks import Callback
from fedlora_ray.engine.checkpoint_state import load_state
from fedlora_ray.engine.client_store import CLIENT_STORE_DIR, ClientStateFiles, ClientStore, state_nbytes
from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.serial import SerialBackend, resume_serial
from fedlora_ray.preflight import resume_config
from fedlora_ray.rundir.checkpoint import checkpoint_round, checkpoints
from tests.conftest import tiny_config
from tests.resume_helpers import assert_same_run

SOFT_EF = [
    "compression.method=soft", "compression.keep_ratio=0.2", "compression.error_feedback=true",
    "federation.rounds=8", "checkpoint.every=2", "checkpoint.keep=2", "federation.eval_every=4",
]  # fmt: skip


def state(value: float) -> dict:
    """A client state shaped like the error memory: two 2 x 2 float32 tensors, 32 bytes."""
    return {"error": {"m": (torch.full((2, 2), float(value)), torch.full((2, 2), -float(value)))}}


def test_snapshots_stay_valid_spill_past_the_budget_and_checkpoint_as_an_index(tmp_path):
    assert state_nbytes(state(0)) == 32
    store = ClientStore.create(tmp_path, mem_mb=64e-6)  # room for two states
    s1 = store.updated(1, {0: state(1), 1: state(1), 2: state(1)})
    assert s1.ram_bytes == 64 and s1.disk_index() == {2: 1} and s1.versions() == {0: 1, 1: 1, 2: 1}
    s2 = s1.updated(2, {2: state(2), 3: state(2)})
    # s1 still reads what it held, though s2 took its index over (its callbacks may refuse s2)
    assert set(s1) == {0, 1, 2} and len(s1) == 3 and 3 not in s1 and len(s2) == 4
    assert float(s1[2]["error"]["m"][0][0, 0]) == 1 and float(s2[2]["error"]["m"][0][0, 0]) == 2
    assert sorted(s2.files.stored()) == [(2, 1), (2, 2), (3, 2)]  # RAM states have no file yet
    # building on s2 accepts it: client 2's file of round 1, which s2 replaced, is deleted
    s3 = s2.updated(3, {0: state(3)})
    assert sorted(s3.files.stored()) == [(2, 2), (3, 2)]
    assert float(s2[0]["error"]["m"][0][0, 0]) == 1 and float(s3[0]["error"]["m"][0][0, 0]) == 3
    assert store == {} and len(store) == 0 and len(s3) == 4
    assert s3.disk_index() == {2: 2, 3: 2}  # 0 and 1 hold the RAM; 3 never fitted
    # a round built again on an older snapshot (a retried round) leaves the newer ones alone
    again = s2.updated(3, {1: state(30)})
    assert float(again[1]["error"]["m"][0][0, 0]) == 30 and float(again[0]["error"]["m"][0][0, 0]) == 1
    assert float(s3[1]["error"]["m"][0][0, 0]) == 1 and float(s3[0]["error"]["m"][0][0, 0]) == 3
    # a checkpoint holds the index alone (and so does the store sent to another process): taken
    # before ``persist``, its RAM states are missing
    early = pickle.loads(pickle.dumps(s3))
    with pytest.raises(RuntimeError, match="ClientStore.resume"):
        early[2]
    with pytest.raises(FileNotFoundError, match="refers to client states that are not there"):
        ClientStore.resume(early, tmp_path, 1.0, 3)
    s3.persist()  # the RAM states of rounds 1 and 3 to their files
    assert sorted(s3.files.stored()) == [(0, 3), (1, 1), (2, 2), (3, 2)]
    loaded = pickle.loads(pickle.dumps(s3))
    back = ClientStore.resume(loaded, tmp_path, 64e-6, 3, kept=[3])
    assert back.versions() == s3.versions() and back.ram_bytes == 0  # all read back from files
    assert all(torch.equal(back[c]["error"]["m"][0], s3[c]["error"]["m"][0]) for c in range(4))


def test_a_state_file_gives_back_every_tensor_bit_for_bit(tmp_path):
    g = torch.Generator().manual_seed(0)
    odd = {
        "error": {"m": (torch.randn(6, 4, generator=g).t(), torch.randn(3, 5, generator=g).requires_grad_())},
        "half": torch.randn(7, generator=g).to(torch.bfloat16),  # a dtype numpy does not have
        "steps": torch.arange(5), "flags": [torch.tensor([True, False])], "note": ("x", 3, 0.5),
    }  # fmt: skip
    files = ClientStateFiles(tmp_path)
    files.write(9, 2, odd)
    back = files.read(9, 2)
    assert back["note"] == ("x", 3, 0.5) and back["half"].dtype == torch.bfloat16
    pairs = [(back["error"]["m"][0], odd["error"]["m"][0]), (back["error"]["m"][1], odd["error"]["m"][1])]
    pairs += [(back["half"], odd["half"]), (back["steps"], odd["steps"]), (back["flags"][0], odd["flags"][0])]
    assert all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y.detach()) for x, y in pairs)
    back["error"]["m"][0].add_(1)  # a state read back is an ordinary, writable tensor
    assert not list(tmp_path.rglob("*.tmp"))


def test_without_a_run_directory_the_spill_goes_to_a_temporary_folder():
    store = ClientStore.create(None, mem_mb=0).updated(1, {5: state(1)})
    folder = store.files.folder
    assert store.disk_index() == {5: 1} and (folder / "0000" / "0000005-000001.safetensors").is_file()
    del store
    gc.collect()
    assert not folder.exists()


class CheckFiles(Callback):
    """After each round: the store's folder holds every file that a kept checkpoint refers to
    and those of the states the new snapshot holds on disk alone, and nothing but the files
    of the new state and of the state before it (the round is not accepted yet when the
    callbacks run)."""

    def __init__(self) -> None:
        self.max_files = 0

    def on_round_end(self, run, state, row, client_rows):
        files = set(state.clients.files.stored())
        held = set(state.clients.disk_index().items())
        for path in checkpoints(run.log.dir):
            held |= set(load_state(path, None).clients.versions().items())
        assert held <= files
        live = set(state.clients.versions().items()) | set(run.state.clients.versions().items())
        assert files <= held | live
        self.max_files = max(self.max_files, len(files))


def run_checked(cfg, out):
    check = CheckFiles()
    run = FederatedRun(cfg, SerialBackend, out, callbacks=[check])
    run.run()
    return run, check.max_files


@pytest.fixture(scope="module")
def in_ram(tmp_path_factory):
    """SOFT with error feedback, every client state in RAM (the default budget)."""
    out = tmp_path_factory.mktemp("store") / "ram"
    run, most = run_checked(tiny_config(*SOFT_EF), out)
    store = run.state.clients
    memory = 6 * 4 * 2 * 64 * 4 * 4  # 6 clients x 4 modules x (B, A) x 64 x 4 float32
    assert store.disk_index() == {} and store.ram_bytes == memory
    # every state is in its file too: the last checkpoint wrote the ones changed since the one before
    assert set(store.versions().items()) <= set(store.files.stored())
    assert most <= 6 + 2 * 3 + 3
    return out


def test_all_on_disk_equals_all_in_ram_and_old_versions_are_collected(in_ram, tmp_path):
    run, most = run_checked(tiny_config(*SOFT_EF, "runtime.client_store_mem_mb=0"), tmp_path / "disk")
    assert_same_run(tmp_path / "disk", in_ram)
    store = run.state.clients
    assert store.ram_bytes == 0 and len(store.disk_index()) == len(store) == 6
    # 6 clients, 3 a round, 8 rounds wrote 24 versions; at most one per client, those the two
    # kept checkpoints hold, and one round's replaced ones were ever on disk at once
    assert most <= 6 + 2 * 3 + 3
    assert len(store.files.stored()) < 24


class Killed(Exception):
    pass


class Crash(Callback):
    def on_round_end(self, run, state, row, client_rows):
        if state.round == 7:
            raise Killed("killed after round 7")


def test_resumed_from_an_older_checkpoint_with_the_disk_store_equals_one_go(in_ram, tmp_path):
    """RAM for two clients' states, the rest on disk. Killed after round 7 (checkpoints 4 and 6
    on disk, round 7's files written), then checkpoint 6 lost as well: the run resumes from
    round 4, whose client states later rounds replaced, and ends bit-identical to the
    uninterrupted run."""
    out = tmp_path / "run"
    cfg = tiny_config(*SOFT_EF, "runtime.client_store_mem_mb=0.02")
    killed = FederatedRun(cfg, SerialBackend, out, callbacks=[Crash()])
    with pytest.raises(Killed):
        killed.run()
    assert 0 < len(killed.state.clients.disk_index()) < 6 and killed.state.clients.ram_bytes > 0
    assert [checkpoint_round(p) for p in checkpoints(out)] == [4, 6]
    at_4 = load_state(checkpoints(out)[0], out / CLIENT_STORE_DIR).clients.versions()
    on_disk = _stored(out)
    assert set(at_4.items()) <= on_disk and any(v == 7 for _, v in on_disk)
    assert any((c, v) in on_disk for c, old in at_4.items() for v in range(old + 1, 8))  # replaced
    (out / "checkpoint" / "round-000006.safetensors").unlink()
    stray = out / CLIENT_STORE_DIR / "0000" / ".0000001-000007.safetensors.tmp"
    stray.write_bytes(b"half a file")
    resume_serial(out)
    assert_same_run(out, in_ram)
    assert not stray.exists()
    resumed = FederatedRun(resume_config(out), SerialBackend, out, resume=True)  # after round 8
    assert resumed.round == 8 and set(resumed.client_state) == set(range(6))
    assert all(resumed.client_state[c]["error"] for c in range(6))


def _stored(out) -> set[tuple[int, int]]:
    return {(int(p.name[:7]), int(p.name[8:14])) for p in (out / CLIENT_STORE_DIR).glob("*/*.safetensors")}
