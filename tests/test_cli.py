"""The console command: a bad config stops before any work; a good one writes a run directory."""

import json
import sys
import types

import pandas as pd

from actors.cli import main
from tests.conftest import ROOT, TINY


def test_bad_config_exits_with_the_field_named_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["run", str(ROOT / "jobs/configs/smoke.yaml"), "--out", str(out), "--set", "model.lora_rank=-2"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "'model.lora_rank' = -2" in err and ">= 1" in err
    assert not out.exists()


def _no_run(*args, **kwargs):  # stands in for the backends: a bad config must stop before them
    raise AssertionError("a backend started")


def _refused(argv, capsys, monkeypatch) -> str:
    # run_command imports the backend it needs; hand it stand-ins (which also keeps Ray unloaded)
    for module, name in (("actors.launch", "run_on_ray"), ("fedlora_ray.engine.serial", "run_serial")):
        fake = types.ModuleType(module)
        setattr(fake, name, _no_run)
        monkeypatch.setitem(sys.modules, module, fake)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedlora-ray: error: ") and "Traceback" not in err
    return err


def test_malformed_yaml_exits_2_naming_file_line_and_column(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nfederation:\n  rounds: 3\n   lr: 0.1\n")
    err = _refused(["run", str(path), "--out", str(tmp_path / "run")], capsys, monkeypatch)
    assert str(path) in err and "not valid YAML" in err and "line 4, column 6" in err
    assert not (tmp_path / "run").exists()


def test_out_naming_an_existing_file_is_refused_up_front(tmp_path, capsys, monkeypatch):
    out = tmp_path / "taken.txt"
    out.write_text("keep me")
    sets = [arg for item in TINY for arg in ("--set", item)]
    err = _refused(
        ["run", str(ROOT / "jobs/configs/smoke.yaml"), "--out", str(out), *sets], capsys, monkeypatch
    )
    assert f"--out {str(out)!r} is an existing file" in err
    assert out.read_text() == "keep me"
    err = _refused(
        ["run", str(ROOT / "jobs/configs/smoke.yaml"), "--out", str(out / "run"), *sets], capsys, monkeypatch
    )
    assert "is a file, not a folder" in err


def test_data_checks_run_before_ray(tmp_path, capsys, monkeypatch):
    # smoke.yaml asks for the Ray backend: the config and data checks stop before it starts
    smoke, out = str(ROOT / "jobs/configs/smoke.yaml"), str(tmp_path / "run")
    err = _refused(
        ["run", smoke, "--out", out, "--set", "federation.num_clients=100000"], capsys, monkeypatch
    )
    assert "'federation.num_clients' = 100000" in err and "training examples" in err
    err = _refused(["run", smoke, "--out", out, "--set", "federation.seed=-1"], capsys, monkeypatch)
    assert "'federation.seed' = -1" in err and ">= 0" in err
    assert not (tmp_path / "run").exists()


def test_model_checks_run_where_the_model_is_built_before_any_training(tmp_path, capsys, ray_cluster):
    """Names and ranks the base model cannot take are refused by the client trainer that builds
    it (so the launching process never loads torch), with the same message: on the serial
    backend in this process, on Ray from the first client actor, before any round or log."""
    smoke, out = str(ROOT / "jobs/configs/smoke.yaml"), tmp_path / "run"
    serial = [arg for item in TINY for arg in ("--set", item)]
    assert main(["run", smoke, "--out", str(out), *serial, "--set", "model.target_modules=[nosuch]"]) == 2
    err = capsys.readouterr().err
    assert "'model.target_modules[0]' = 'nosuch'" in err and "'query'" in err and "Traceback" not in err
    on_ray = [
        *serial,
        "--set",
        "runtime.backend=ray",
        "--set",
        f"runtime.ray_address={ray_cluster['address']}",
    ]
    assert main(["run", smoke, "--out", str(out), *on_ray, "--set", "model.lora_rank=65"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after Ray's own lines on joining the cluster
    assert last.startswith("fedlora-ray: error: config field 'model.lora_rank' = 65") and "<= 64" in last
    assert "Traceback" not in err and "ray::" not in err
    assert not (out / "rounds.parquet").exists() and not (out / "checkpoint").exists()


def test_serial_run_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [arg for item in TINY for arg in ("--set", item)]
    assert main(["run", str(ROOT / "jobs/configs/smoke.yaml"), "--out", str(out), *sets]) == 0
    assert json.loads((out / "config.json").read_text())["runtime"]["backend"] == "serial"
    assert len(pd.read_parquet(out / "rounds.parquet")) == 2
    assert "run directory" in capsys.readouterr().out
    # the same folder is never overwritten
    assert main(["run", str(ROOT / "jobs/configs/smoke.yaml"), "--out", str(out), *sets]) == 2


def test_fields_lists_every_field_with_help(capsys):
    assert main(["fields"]) == 0
    text = capsys.readouterr().out
    assert "federation.clients_per_round = 10" in text and "runtime.num_gpus_per_actor" in text


def test_fields_lists_the_names_each_registry_holds(capsys):
    from fedlora_ray.components import registered_names
    from fedlora_ray.control import CONTROLLERS, register_controller
    from fedlora_ray.control.fixed import Fixed

    @register_controller
    class Mine(Fixed):
        name = "mine"

    try:
        assert main(["fields"]) == 0
        text, registered = capsys.readouterr().out, registered_names()
    finally:
        del CONTROLLERS["mine"]
    lines = text.splitlines()
    for path, names in registered.items():
        listed = lines[next(i for i, line in enumerate(lines) if line.startswith(f"{path} = ")) + 2]
        assert listed == "    registered: " + ", ".join(repr(n) for n in names), path
    for name in ("'vit_b16'", "'efficientnet_lite0'", "'distilbert'", "'minilm'", "'tiny'"):
        assert name in text
    assert "registered: 'equal', 'fixed', 'osfa', 'tsfa', 'finish', 'adaptive', 'mine'" in text


def test_report_draws_the_standard_plots_from_several_runs(tmp_path, capsys):
    sets = [arg for item in TINY for arg in ("--set", item)]
    runs = []
    for seed, method in ((0, "soft"), (1, "soft"), (0, "none")):
        out = tmp_path / f"{method}{seed}"
        extra = ["--set", f"federation.seed={seed}", "--set", f"compression.method={method}"]
        assert main(["run", str(ROOT / "jobs/configs/smoke.yaml"), "--out", str(out), *sets, *extra]) == 0
        runs.append(str(out))
    assert main(["report", *runs, "--out", str(tmp_path / "rep")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == sorted(
        ["accuracy_vs_round.png", "accuracy_vs_bits.png", "accuracy_vs_time.png", "loss_vs_round.png",
         "loss_vs_bits.png", "covariance_vs_round.png", "orthogonality_vs_round.png"]
    )  # fmt: skip
    summary = (tmp_path / "rep" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| smoke")]
    assert len(rows) == 2  # the two soft seeds form one group
    assert any("| 2 |" in r and "soft rho=0.1" in r for r in rows)
    assert main(["report", str(tmp_path / "nothing-here")]) == 2


def test_controller_only_mode_from_the_cli(tmp_path, capsys):
    out = tmp_path / "ctl.parquet"
    args = ["control", str(ROOT / "jobs/configs/quickstart.yaml"), "--rounds", "400", "--out", str(out)]
    sets = ["--set", "controller.kind=tsfa", "--set", "compression.method=soft"]
    assert main([*args, *sets, "--clients", str(tmp_path / "clients.parquet")]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 400 and df["lora_rank"].nunique() == 1 and (df["keep_ratio"] <= 1).all()
    clients = pd.read_parquet(tmp_path / "clients.parquet")
    assert len(clients) == df["sampled"].sum() and set(clients["round"]) == set(range(1, 401))
    assert "mean upload delay" in capsys.readouterr().out
    assert main([*args, "--set", "controller.kind=tsfa"]) == 2  # tsfa needs a sparsifier


def test_a_run_draws_its_partition_once(tmp_path, monkeypatch):
    """The launcher deals the training labels to the clients once and the run uses that deal:
    nothing else draws a partition (the driver's context once drew it again)."""
    import fedlora_ray.data
    import fedlora_ray.data.partition
    import fedlora_ray.preflight

    draws = []
    real = fedlora_ray.data.partition.partition_indices

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        draws.append(1)
        return real(*args, **kwargs)

    for module in (fedlora_ray.data, fedlora_ray.data.partition, fedlora_ray.preflight):
        monkeypatch.setattr(module, "partition_indices", counted)
    sets = [arg for item in TINY for arg in ("--set", item)]
    assert main(["run", str(ROOT / "jobs/configs/smoke.yaml"), "--out", str(tmp_path / "run"), *sets]) == 0
    assert len(draws) == 1
