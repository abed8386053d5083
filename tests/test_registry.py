"""Schemes, compressors and controllers are looked up by name: a new one is a class and one
registration, with no change to the round or the existing files."""

from __future__ import annotations

import pytest
import torch

from fedlora_ray.algorithm.run import FederatedRun
from fedlora_ray.algorithm.schemes import SCHEMES, register_scheme
from fedlora_ray.algorithm.schemes.fedavg import FedAvg
from fedlora_ray.config import ConfigError
from fedlora_ray.serial import SerialBackend
from tests.conftest import tiny_config


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
    import subprocess

    from tests.conftest import ROOT

    found = subprocess.run(
        ["grep", "-rEn", "(kind|method) ==", "fedlora_ray"], cwd=ROOT, capture_output=True, text=True
    ).stdout.splitlines()
    assert len(found) <= 5 and all(line.startswith("fedlora_ray/config/") for line in found), found
