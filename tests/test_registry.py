"""Schemes, compressors and controllers are looked up by name: a new one is a class and one
registration, with no change to the round or the existing files. A registered one is chosen
from a config as a built-in is: the composition root checks its name against the registry and
asks it to check its own fields."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fedlora_ray.algorithm.schemes import SCHEMES, register_scheme
from fedlora_ray.algorithm.schemes.fedavg import FedAvg
from fedlora_ray.components import load_run_config, registered_names
from fedlora_ray.compress import COMPRESSORS, module_budget, register_compressor
from fedlora_ray.compress.base import PerModule
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.control import CONTROLLERS, register_controller
from fedlora_ray.control.base import ControllerState
from fedlora_ray.control.equal import Equal
from fedlora_ray.engine.run import FederatedRun
from fedlora_ray.engine.serial import SerialBackend, run_serial
from fedlora_ray.tasks import lora_module_dims
from tests.conftest import TINY, tiny_config


def test_a_registered_scheme_runs_without_touching_existing_files():
    @register_scheme
    class HalfStep(FedAvg):
        """FedAvg whose server moves half way to the average (a damped server step)."""

        name = "halfstep"

        def aggregate(self, global_adapter, uploads, weights, components):
            update = super().aggregate(global_adapter, uploads, weights, components)
            update.lora = {m: (0.5 * b, 0.5 * a) for m, (b, a) in update.lora.items()}
            update.head = {k: 0.5 * v for k, v in update.head.items()}
            return update

    try:
        with pytest.raises(ConfigError, match="allowed values are .*'halfstep'"):
            tiny_config("algorithm.kind=nosuch")
        # its rules are its class's: FedAvg's, any compressor goes
        assert tiny_config("algorithm.kind=halfstep", "compression.method=soft").algorithm.kind == "halfstep"
        runs = {}
        for kind in ("fedavg", "halfstep"):
            cfg = tiny_config(f"algorithm.kind={kind}", "federation.rounds=1")
            runs[kind] = FederatedRun(cfg, SerialBackend, None)
            runs[kind].run()
        start = runs["fedavg"].backend.initial_adapter()
        for m, (_b, a0) in start.lora.items():
            full, half = runs["fedavg"].global_adapter.lora[m], runs["halfstep"].global_adapter.lora[m]
            torch.testing.assert_close(half[1] - a0, 0.5 * (full[1] - a0), rtol=1e-5, atol=1e-7)
            assert not torch.equal(half[1], full[1])
    finally:
        del SCHEMES["halfstep"]


def test_each_scheme_and_controller_checks_its_own_rules():
    with pytest.raises(ConfigError, match="sparsifiers apply to algorithm.kind='fedavg' only"):
        tiny_config("algorithm.kind=fslora", "compression.method=soft")
    with pytest.raises(ConfigError, match="must be a sparsifier"):
        tiny_config("controller.kind=osfa")
    with pytest.raises(ConfigError, match="sampling.kind must be 'independent'"):
        tiny_config("controller.kind=adaptive", "algorithm.kind=fslora", "model.lora_rank=8")
    with pytest.raises(ConfigError, match="'compression.method' = 'zip'"):
        tiny_config("compression.method=zip")


def test_the_round_holds_no_scheme_branch():
    """No code outside the config compares a component's name (algorithm.kind, compression.method,
    controller.kind, sampling.kind): the registries' entries answer for their component. (A
    privacy mechanism's kind is a mechanism, not a component: privacy/ reads it.)"""
    import subprocess

    from tests.conftest import ROOT

    found = subprocess.run(
        ["grep", "-rEn", "(algorithm|compression|comp|controller|sampling|samp|cfg)\\.(kind|method) ==",
         "fedlora_ray"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(found) <= 5 and all(line.startswith("fedlora_ray/config/") for line in found), found


def _first_positions(ub, ua, budget, local_b, local_a, cfg, gen):
    """A toy sparsifier: the first K_m positions of [vec(U_B); vec(U_A)] (all of B's first rows)."""
    return torch.arange(budget)


def _needs_error_feedback(cfg: RunConfig) -> None:
    if not cfg.compression.error_feedback:
        raise ConfigError("config field 'compression.error_feedback' = False: method 'firstk' needs it")


def test_a_registered_compressor_is_chosen_from_a_config_and_runs(tmp_path):
    register_compressor("firstk", PerModule(_first_positions), validate=_needs_error_feedback)
    try:
        assert "firstk" in registered_names()["compression.method"]
        with pytest.raises(ConfigError, match="'compression.error_feedback' = False: method 'firstk'"):
            tiny_config("compression.method=firstk", "compression.error_feedback=false")
        cfg = tiny_config("compression.method=firstk", "compression.keep_ratio=0.25", "federation.rounds=1")
        run_serial(cfg, tmp_path / "run")
        clients = pd.read_parquet(tmp_path / "run" / "clients.parquet")
        budget = sum(module_budget(0.25, d, k, cfg.model.lora_rank) for d, k in lora_module_dims(cfg.model))
        assert clients["kept_entries"].tolist() == [budget] * 3
    finally:
        del COMPRESSORS["firstk"]


class HalfRho(Equal):
    """The equal split, at half the configured keep ratio; it needs a sparsifier, as osfa does."""

    name = "halfrho"

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        if cfg.compression.method == "none":
            raise ConfigError("config field 'controller.kind' = 'halfrho': it halves a keep ratio")

    def keep_ratio(self, state: ControllerState, snr: np.ndarray) -> float:
        return 0.5 * self.fixed_rho


def test_a_registered_controller_is_chosen_from_a_config_and_runs(tmp_path):
    register_controller(HalfRho)
    try:
        assert "halfrho" in registered_names()["controller.kind"]
        with pytest.raises(ConfigError, match="'controller.kind' = 'halfrho': it halves"):
            tiny_config("controller.kind=halfrho")
        cfg = tiny_config(
            "controller.kind=halfrho", "compression.method=soft", "compression.keep_ratio=0.4",
            "federation.rounds=1",
        )  # fmt: skip
        run_serial(cfg, tmp_path / "run")
        rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
        assert rounds["keep_ratio"].tolist() == [pytest.approx(0.2)]
    finally:
        del CONTROLLERS["halfrho"]


def test_load_run_config_checks_every_registered_name_as_the_tiny_config_does():
    names = registered_names()
    assert set(names) == {
        "data.dataset", "model.name", "algorithm.kind", "compression.method", "controller.kind",
    }  # fmt: skip
    for path, registered in names.items():
        with pytest.raises(ConfigError, match=f"'{path}' = 'nosuch': allowed values are {registered[0]!r}"):
            load_run_config(None, [*TINY, f"{path}=nosuch"])
