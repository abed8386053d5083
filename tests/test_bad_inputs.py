"""A catalogue of bad command lines, each run through the console command in this process.

Every case must stop before any training (and without starting Ray) with a one-line message that
names the field or the file, no traceback, and leave every file the case can see as it was: the
case's own folder (its inputs, the would-be outputs, the working folder) and a finished run
folder that some cases point at. The issue-19 cases are marked ``#N`` with the issue's number.

Cases that need the base model's shapes (a budget that sends nothing, an unknown LoRA target)
run on the serial backend: the trainer that builds the model refuses them before any round."""

from __future__ import annotations

import hashlib
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from actors.cli import main
from tests.conftest import ROOT, TINY

SMOKE = str(ROOT / "jobs/configs/smoke.yaml")
SERIAL = [arg for item in TINY for arg in ("--set", item)]  # smoke's tiny model, serial, small data


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class Where:
    """The paths a case's command line may name."""

    tmp: Path  # the case's own folder (also the working folder)
    run: Path  # a finished two-round run (shared, never to change)

    def file(self, name: str, text: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def folder(self, name: str, *files: str) -> str:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        for f in files:
            (path / f).write_text("not yours\n")
        return str(path)


@dataclass
class Case:
    id: str
    argv: Callable[[Where], list[str]]
    says: tuple[str, ...]  # fragments the message holds ({tmp} and {run} are filled in)
    code: int = 2
    skip: Callable[[], bool] | None = field(default=None)


def run_out(w: Where) -> str:
    return str(w.tmp / "out")


def _with_default_report_folder(w: Where) -> list[str]:
    w.folder("report", "todo.txt")  # ./report, the default --out, already holds a file of its own
    return ["report", str(w.run)]


def run(*sets: str, serial: bool = False) -> Callable[[Where], list[str]]:
    """`run` of the smoke config into the case's folder with these overrides (on the serial
    backend and the tiny data with ``serial``)."""
    extra = [arg for item in sets for arg in ("--set", item)]
    return lambda w: ["run", SMOKE, "--out", run_out(w), *(SERIAL if serial else []), *extra]


def control(*args: str) -> Callable[[Where], list[str]]:
    return lambda w: ["control", SMOKE, "--rounds", "3", "--out", str(w.tmp / "c.parquet"), *args]


SPEC = str(ROOT / "jobs/sweeps/smoke.yaml")
KEEP = "compression.keep_ratio"

CASES = [
    # ---- issue 19, "What failed": 2, 9 and item 4 (every output path guarded like run --out)
    Case("#2 control --out an existing text file",
         lambda w: [*control()(w), "--out", w.file("notes.txt", "me")], ("--out", "notes.txt", "not write")),
    Case("#9 control --out an existing run folder", lambda w: [*control()(w), "--out", str(w.run)],
         ("--out", "{run}", "is a folder")),
    Case("control --clients an existing file",
         lambda w: control("--clients", w.file("clients.csv", "a,b"))(w), ("--clients", "clients.csv")),
    Case("control --clients the same file as --out",
         lambda w: control("--clients", str(w.tmp / "c.parquet"))(w), ("--clients", "--out's file")),
    Case("control --out a Parquet file that control did not write",
         lambda w: [*control()(w), "--out", str(w.run / "profile.parquet")],
         ("--out", "profile.parquet", "control did not write")),
    Case("control --out through a file", lambda w: [*control()(w), "--out", w.file("f.txt", "x") + "/c.pq"],
         ("--out", "f.txt", "is a file, not a folder")),
    Case("control --out a URI", lambda w: [*control()(w), "--out", "s3://bucket/c.parquet"],
         ("--out", "s3://bucket/c.parquet", "local Parquet file")),
    Case("report --out an existing file", lambda w: ["report", str(w.run), "--out", w.file("r.md", "mine")],
         ("--out", "r.md", "existing file")),
    Case("report --out a run folder", lambda w: ["report", str(w.run), "--out", str(w.run)],
         ("--out", "{run}", "a report did not write")),
    Case("report --out a folder of other files", lambda w: ["report", str(w.run), "--out",
         w.folder("docs", "index.md")], ("--out", "docs", "index.md")),
    Case("report --out a folder whose summary.md is not a report's", lambda w: ["report", str(w.run), "--out",
         w.folder("rep", "summary.md")], ("--out", "summary.md (not a report's)")),
    Case("report with the default --out holding other files", lambda w: _with_default_report_folder(w),
         ("--out", "'report'", "todo.txt")),
    Case("sweep --out an existing file", lambda w: ["sweep", SPEC, "--out", w.file("root.txt", "x")],
         ("--out", "root.txt", "existing file")),
    Case("sweep --out a run folder", lambda w: ["sweep", SPEC, "--out", str(w.run)],
         ("--out", "{run}", "a run's folder")),
    Case("sweep --out a folder of other files", lambda w: ["sweep", SPEC, "--out", w.folder("d", "a.csv")],
         ("--out", "a.csv", "not a sweep's")),
    # ---- 10: a budget that sends nothing
    Case("#10 keep_ratio=1e-9 sends no entry", run("compression.method=soft", f"{KEEP}=1e-9", serial=True),
         ("'compression.keep_ratio' = 1e-09", "smallest keep ratio", "compression.allow_empty_upload")),
    Case("#10 fedlodrop below one whole component", run("compression.method=fedlodrop", f"{KEEP}=0.05",
         serial=True), ("'compression.keep_ratio' = 0.05", "whole rank component", "smallest keep ratio")),
    Case("flasc over all modules with nothing to send", run("compression.method=flasc",
         "compression.flasc_scope=global", f"{KEEP}=1e-7", serial=True),
         ("'compression.keep_ratio' = 1e-07", "all modules together")),
    Case("control with a budget that sends nothing", control("--set", "compression.method=rlora", "--set",
         f"{KEEP}=1e-6"), ("'compression.keep_ratio' = 1e-06", "smallest keep ratio")),
    # ---- 11: an empty config file
    Case("#11 an empty config file", lambda w: ["run", w.file("empty.yaml", ""), "--out", run_out(w)],
         ("empty.yaml", "is empty")),
    Case("a config file of comments only", lambda w: ["run", w.file("c.yaml", "# TODO\n# model: tiny\n"),
         "--out", run_out(w)], ("c.yaml", "is empty")),
    Case("a config file holding a list", lambda w: ["run", w.file("l.yaml", "- model.name=tiny\n"), "--out",
         run_out(w)], ("l.yaml", "must hold a mapping", "not a list")),
    Case("a config file holding a word", lambda w: ["run", w.file("w.yaml", "smoke\n"), "--out", run_out(w)],
         ("w.yaml", "must hold a mapping", "not a str")),
    # ---- 12: bf16 on a CPU
    Case("#12 bf16 on CPU client actors", run("runtime.precision=bf16"),
         ("'runtime.precision' = 'bf16'", "runtime.num_gpus_per_actor = 0")),
    Case("bf16 on the serial backend on the CPU", run("runtime.device=cpu", "runtime.precision=bf16",
         serial=True), ("'runtime.precision' = 'bf16'", "runtime.device = 'cpu'")),
    Case("bf16 on the serial backend without CUDA", run("runtime.precision=bf16", serial=True),
         ("'runtime.precision' = 'bf16'", "no CUDA"), skip=_cuda),
    # ---- 13: --by keys
    Case("#13 compare --by an unknown key", lambda w: ["compare", str(w.run), "--by", "nosuch"],
         ("--by 'nosuch'", "{run}", "section.field")),
    Case("report --by an unknown key", lambda w: ["report", str(w.run), "--by", "federation.nosuch", "--out",
         str(w.tmp / "rep")], ("--by 'federation.nosuch'", "section.field")),
    Case("compare --by a section, not a field", lambda w: ["compare", str(w.run), "--by", "federation"],
         ("--by 'federation'",)),
    # ---- 8: an unreachable cluster address (checked before Ray starts)
    Case("#8 an unreachable non-local ray_address",
         run("runtime.ray_address=10.255.255.1:6379", "runtime.connect_timeout_s=1"),
         ("'runtime.ray_address' = '10.255.255.1:6379'", "connect_timeout_s")),
    Case("a ray_address that is the dashboard's", run("runtime.ray_address=http://127.0.0.1:8265"),
         ("'runtime.ray_address'", "dashboard")),
    Case("a ray_address without a port", run("runtime.ray_address=head-node"),
         ("'runtime.ray_address'", "host:port")),
    # ---- 14 (the config side): the new guard's own fields
    Case("divergence_factor between 0 and 1", run("federation.divergence_factor=0.5"),
         ("'federation.divergence_factor' = 0.5", "> 1")),
    Case("divergence_patience 0", run("federation.divergence_patience=0"),
         ("'federation.divergence_patience' = 0", ">= 1")),
    Case("allow_empty_upload not a boolean", run("compression.allow_empty_upload=sometimes"),
         ("'compression.allow_empty_upload'", "true or false")),
    # ---- already clear before issue 19 (kept here so that they stay clear)
    Case("a missing config file", lambda w: ["run", str(w.tmp / "nope.yaml"), "--out", run_out(w)],
         ("nope.yaml", "does not exist")),
    Case("malformed YAML", lambda w: ["run", w.file("bad.yaml", "federation:\n  rounds: 3\n   lr: 1\n"),
         "--out", run_out(w)], ("bad.yaml", "not valid YAML", "line 3")),
    Case("run --out an existing file", lambda w: ["run", SMOKE, "--out", w.file("taken.txt", "x")],
         ("--out", "taken.txt", "existing file")),
    Case("run --out through a file", lambda w: ["run", SMOKE, "--out", w.file("f", "x") + "/run"],
         ("--out", "is a file, not a folder")),
    Case("run --out a finished run", lambda w: ["run", SMOKE, "--out", str(w.run)],
         ("--out", "{run}", "already holds a run's logs")),
    Case("run --out an unknown URI scheme", lambda w: ["run", SMOKE, "--out", "ftp://host/run"],
         ("--out 'ftp://host/run'", "scheme 'ftp'")),
    Case("clients_per_round > num_clients", run("federation.clients_per_round=20"),
         ("'federation.clients_per_round' = 20", "federation.num_clients")),
    Case("more clients than the data serves", run("federation.num_clients=100000",
         "federation.clients_per_round=10"), ("'federation.num_clients' = 100000",)),
    Case("resume a folder that does not exist", lambda w: ["resume", str(w.tmp / "gone")],
         ("gone", "not a run directory")),
    Case("resume with a field but rounds", lambda w: ["resume", str(w.run), "--set", "federation.lr=1"],
         ("federation.lr=1", "only federation.rounds may change")),
    Case("resume to fewer rounds than its checkpoint", lambda w: ["resume", str(w.run), "--set",
         "federation.rounds=1"], ("'federation.rounds' = 1", "can only be extended")),
    Case("report of a folder without logs", lambda w: ["report", w.folder("empty"), "--out", run_out(w)],
         ("empty",)),
    Case("compare of a path that does not exist", lambda w: ["compare", str(w.tmp / "nothing")],
         ("nothing",)),
    Case("compare --last 0", lambda w: ["compare", str(w.run), "--last", "0"], ("--last 0", ">= 1")),
    Case("a missing sweep spec", lambda w: ["sweep", str(w.tmp / "nope.yaml"), "--out", str(w.tmp / "s")],
         ("nope.yaml", "does not exist")),
    Case("a sweep spec with an unknown key",
         lambda w: ["sweep", w.file("s.yaml", f"base: {SMOKE}\ngrids: 1\n"), "--out", str(w.tmp / "s")],
         ("s.yaml", "'grids'")),
    Case("an empty sweep spec", lambda w: ["sweep", w.file("s.yaml", ""), "--out", str(w.tmp / "s")],
         ("s.yaml", "is empty")),
    Case("a sweep whose grid holds a bad value", lambda w: ["sweep", w.file("s.yaml", f"base: {SMOKE}\n"
         "grid: {federation.rounds: [2, -1]}\n"), "--out", str(w.tmp / "s")], ("'federation.rounds' = -1",)),
    Case("an unknown LoRA target", run("model.target_modules=[q_proj]", serial=True),
         ("'model.target_modules[0]' = 'q_proj'", "'query'")),
    Case("a rank above the model's dimensions", run("model.lora_rank=65", serial=True),
         ("'model.lora_rank' = 65", "<= 64")),
    Case("tsfa without a sparsifier", control("--set", "controller.kind=tsfa"), ("controller.kind",)),
    # ---- twenty-odd more that a user could plausibly type
    Case("a typo in a section name", run("federaton.rounds=5"), ("'federaton'", "allowed keys")),
    Case("a typo in a field name", run("federation.round=5"), ("'federation.round'", "allowed keys here")),
    Case("a typo in a YAML file's key", lambda w: ["run", w.file("t.yaml", "model:\n  nme: tiny\n"), "--out",
         run_out(w)], ("'model.nme'", "allowed keys here")),
    Case("rounds as a word", run("federation.rounds=ten"), ("'federation.rounds' = 'ten'",
         "expected an integer")),
    Case("negative rounds", run("federation.rounds=-3"), ("'federation.rounds' = -3", ">= 1")),
    Case("zero rounds", run("federation.rounds=0"), ("'federation.rounds' = 0", ">= 1")),
    Case("fractional rounds", run("federation.rounds=2.5"), ("'federation.rounds' = 2.5",
         "expected an integer")),
    Case("an unknown model name", run("model.name=llama-7b"), ("'model.name' = 'llama-7b'", "'tiny'")),
    Case("an unknown dataset", run("data.dataset=imagenet"), ("'data.dataset' = 'imagenet'", "'wordnet'")),
    Case("an unknown compression method", run("compression.method=topk"), ("'compression.method' = 'topk'",
         "'soft'")),
    Case("an unknown controller", run("controller.kind=pid"), ("'controller.kind' = 'pid'", "'tsfa'")),
    Case("keep_ratio as a percentage", run(f"{KEEP}=10"), ("'compression.keep_ratio' = 10", "<= 1")),
    Case("keep_ratio 0", run(f"{KEEP}=0"), ("'compression.keep_ratio' = 0", "> 0")),
    Case("a learning rate of 5", run("federation.lr=5"), ("'federation.lr' = 5", "<= 1")),
    Case("a server step of 100", run("algorithm.server_lr=100"), ("'algorithm.server_lr' = 100", "<= 10")),
    Case("batch size 0", run("federation.batch_size=0"), ("'federation.batch_size' = 0", ">= 1")),
    Case("rank 0", run("model.lora_rank=0"), ("'model.lora_rank' = 0", ">= 1")),
    Case("a partition that does not exist", run("data.partition=random"), ("'data.partition' = 'random'",
         "'iid'")),
    Case("q_min above q_max", run("sampling.q_min=0.5", "sampling.q_max=0.2"),
         ("'sampling.q_min' = 0.5", "sampling.q_max")),
    Case("distances the wrong way round", run("channel.distance_min_m=900"),
         ("'channel.distance_min_m' = 900", "channel.distance_max_m")),
    Case("num_actors as a word", run("runtime.num_actors=all"), ("'runtime.num_actors' = 'all'", "'auto'")),
    Case("1.5 GPUs per actor", run("runtime.num_gpus_per_actor=1.5"),
         ("'runtime.num_gpus_per_actor' = 1.5", "whole number")),
    Case("a connect timeout of 0", run("runtime.connect_timeout_s=0"), ("'runtime.connect_timeout_s' = 0",
         "> 0")),
    Case("an override without '='", run("federation.rounds"), ("federation.rounds", "section.field=value")),
    Case("an override with no field", run("=3"), ("'=3'", "empty field name")),
    Case("an unclosed list in an override", run("model.target_modules=[query, value"),
         ("model.target_modules", "not valid YAML")),
    Case("a section given a value", run("federation=5"), ("'federation'", "must be a mapping")),
    Case("a config path that is a folder", lambda w: ["run", str(ROOT / "jobs/configs"), "--out", run_out(w)],
         ("jobs/configs", "is a folder")),
    Case("a config file that is not text", lambda w: ["run", w.file("x.yaml", b"\xff\xfe\x00bin"), "--out",
         run_out(w)], ("x.yaml", "cannot be read")),
    Case("a sketch scheme with a sparsifier", run("algorithm.kind=fslora", "compression.method=soft"),
         ("'compression.method' = 'soft'",)),
    Case("client ratios above 1", run("algorithm.kind=fslora", "algorithm.client_ratios=[0.5, 2]"),
         ("'algorithm.client_ratios[1]' = 2.0", "(0, 1]")),
    Case("control --rounds 0", lambda w: [*control()(w), "--rounds", "0"], ("--rounds", ">= 1")),
    Case("control --rounds as a word", lambda w: [*control()(w), "--rounds", "many"], ("--rounds", "'many'")),
    Case("compare --target as a percentage", lambda w: ["compare", str(w.run), "--target", "80"],
         ("--target 80", "[0, 1]")),
    Case("the serial backend on CUDA without CUDA", run("runtime.device=cuda", serial=True),
         ("'runtime.device' = 'cuda'", "CUDA is not available"), skip=_cuda),
    Case("an unknown command", lambda w: ["train", SMOKE], ("invalid choice: 'train'",)),
]  # fmt: skip


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots``: path -> content hash ('dir' for folders)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            key = str(path)
            out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real two-round run on the tiny model (serial), for the cases that point at one."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", SMOKE, "--out", str(out), *SERIAL]) == 0
    return out


@pytest.fixture(autouse=True)
def _no_ray_start(monkeypatch):
    """No case may start Ray: its refusal must come first."""
    import ray

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a bad input reached ray.init")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_touches_nothing(case, tmp_path, finished_run, capsys, monkeypatch):
    if case.skip is not None and case.skip():
        pytest.skip("not a bad input on this machine")
    monkeypatch.chdir(tmp_path)  # a default output (report/, control.parquet) would land here
    where = Where(tmp_path, finished_run)
    argv = case.argv(where)
    capsys.readouterr()
    before = _snapshot(tmp_path, finished_run)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == case.code, err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert "error: " in last, err  # one line says what is wrong (argparse puts its usage first)
    for fragment in case.says:
        assert fragment.format(tmp=tmp_path, run=finished_run) in last, (fragment, last)
    assert "Traceback" not in err
    assert _snapshot(tmp_path, finished_run) == before


# ---- the details behind some cases


def test_the_smallest_keep_ratio_given_is_the_smallest_that_sends_something():
    """The figure in the message is exact to the digits shown: it sends something, and the
    ratio one unit below it in the last digit shown does not."""
    import re

    from fedlora_ray.compress.bits import module_budget
    from fedlora_ray.config import ConfigError
    from fedlora_ray.preflight import check_upload_budget
    from tests.conftest import tiny_config

    dims = [(64, 64), (64, 64), (256, 64)]
    for method, ratio in (("soft", 1e-9), ("fedlodrop", 0.05), ("hetlora", 1e-5)):
        cfg = tiny_config(f"compression.method={method}", f"{KEEP}={ratio}", "model.lora_rank=6")
        with pytest.raises(ConfigError) as err:
            check_upload_budget(cfg, dims)
        found = re.search(r"smallest keep ratio that sends something in every targeted module is (\S+);",
                          str(err.value))  # fmt: skip
        assert found is not None, err.value
        shown = float(found.group(1))
        step = 10.0 ** (math.floor(math.log10(shown)) - 2)
        need = {"fedlodrop": lambda d, k: d + k}.get(method, lambda d, k: 1)
        assert all(module_budget(shown, d, k, 6) >= need(d, k) for d, k in dims)
        assert any(module_budget(shown - step, d, k, 6) < need(d, k) for d, k in dims)
        ok = tiny_config(f"compression.method={method}", f"{KEEP}={shown}", "model.lora_rank=6")
        check_upload_budget(ok, dims)  # the ratio shown runs
        allowed = tiny_config(f"compression.method={method}", f"{KEEP}={ratio}", "model.lora_rank=6",
                              "compression.allow_empty_upload=true")  # fmt: skip
        check_upload_budget(allowed, dims)  # and the field lets the empty upload through


def test_a_ratio_the_controller_chooses_is_not_checked():
    from fedlora_ray.preflight import check_upload_budget
    from tests.conftest import tiny_config

    cfg = tiny_config("compression.method=fedlodrop", "compression.keep_ratio=0.05", "controller.kind=osfa")
    check_upload_budget(cfg, [(64, 64)])


class _Silent:
    """A TCP server that accepts every connection and never answers (as a firewall or proxy may)."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.answer, self.held = answer, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.answer is not None:
                conn.sendall(self.answer)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 404 Not Found\r\n\r\n"], ids=["silent", "not-grpc"])
def test_a_port_that_accepts_tcp_but_is_no_ray_cluster_fails_within_the_timeout(answer):
    """Issue 19 #8: ray.init retried such an address for 25 s and ended in a traceback."""
    from actors.launch import check_reachable
    from fedlora_ray.config import ConfigError

    server = _Silent(answer)
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError) as err:
            check_reachable(f"127.0.0.1:{server.port}", "config field 'runtime.ray_address'", 1.0)
        took = time.monotonic() - start
    finally:
        server.close()
    assert took < 2.0, took  # the timeout, plus the probe thread's half second of grace
    assert "'runtime.ray_address'" in str(err.value) and "not" in str(err.value)


def test_an_output_of_their_own_is_rewritten(tmp_path, finished_run, capsys):
    """The guards refuse only what is not theirs: a second control into its own file, and a
    second report into its own folder, go ahead."""
    ctl = str(tmp_path / "c.parquet")
    for _ in range(2):
        assert main(["control", SMOKE, "--rounds", "3", "--out", ctl, "--clients", str(tmp_path / "k")]) == 0
    rep = str(tmp_path / "rep")
    for _ in range(2):
        assert main(["report", str(finished_run), "--out", rep]) == 0
    assert (tmp_path / "rep" / "summary.md").read_text().startswith("# Run report\n")


def test_by_groups_plain_runs_by_a_config_field(finished_run, capsys):
    assert main(["compare", str(finished_run), str(finished_run), "--by", "federation.lr", "seed"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "federation.lr=" in line]
    assert len(rows) == 1 and "| 2 |" in rows[0]  # one group of the two runs, labelled by its values
    assert "seed=0" in rows[0]


def test_a_stored_config_without_a_newer_field_counts_as_its_default():
    """A sweep continues its runs after a field was added: the stored config.json lacks it, which
    means the default; a real difference is still refused."""
    from fedlora_ray.config import RunConfig
    from fedlora_ray.sweep import _diff
    from tests.conftest import tiny_config

    new = tiny_config().to_dict()
    old = tiny_config().to_dict()
    del old["federation"]["divergence_factor"], old["compression"]["allow_empty_upload"]
    assert _diff(old, new, RunConfig().to_dict()) == set()
    changed = tiny_config("compression.allow_empty_upload=true").to_dict()
    assert _diff(old, changed, RunConfig().to_dict()) == {"compression.allow_empty_upload"}


def test_a_sweep_root_is_reused_and_an_empty_folder_taken(tmp_path):
    from fedlora_ray.sweep import check_sweep_root

    check_sweep_root(str(tmp_path / "new"))
    (tmp_path / "empty").mkdir()
    check_sweep_root(str(tmp_path / "empty"))
    root = tmp_path / "root"
    (root / "run-a").mkdir(parents=True)
    (root / "sweep.json").write_text("{}")
    check_sweep_root(str(root))
