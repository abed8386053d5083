"""The Ray runtime on the shared local cluster: same numbers as serial, GPU shares honoured."""

from collections import Counter

import pandas as pd
import pytest
import ray
from safetensors.torch import load_file

from actors.backend import RayBackend
from actors.launch import run_on_ray
from fedlora_ray.engine.serial import run_serial
from tests.conftest import tiny_config

pytestmark = pytest.mark.ray

EXACT_ROUND_COLUMNS = [
    "round",
    "sampled",
    "examples",
    "train_loss",
    "test_accuracy",
    "covariance",
    "uplink_bits",
    "kept_entries",
    "orth_error_a",
    "orth_error_b",
]
EXACT_CLIENT_COLUMNS = [
    "round", "client_id", "examples", "weight", "steps", "local_loss", "bits_sent", "kept_entries",
    "distortion",
]  # fmt: skip


@pytest.mark.parametrize("per_pass", [1, 2])
def test_serial_and_ray_with_one_and_two_actors_give_the_same_numbers(ray_session, tmp_path, per_pass):
    """SOFT with error feedback over 3 rounds, so client state travels to and from the actors
    (with 6 clients and 3 per round, clients come back with their residuals). With 2 clients
    per pass a round is a pass of two and a pass of one, the same passes on any pool."""
    common = (
        "federation.rounds=3", "compression.method=soft", "compression.keep_ratio=0.2",
        f"runtime.clients_per_pass={per_pass}",
    )  # fmt: skip
    run_serial(tiny_config(*common), tmp_path / "serial")
    for n in (1, 2):
        run_on_ray(
            tiny_config(*common, "runtime.backend=ray", f"runtime.num_actors={n}"), tmp_path / f"ray{n}"
        )
    ref_rounds = pd.read_parquet(tmp_path / "serial" / "rounds.parquet")
    ref_clients = pd.read_parquet(tmp_path / "serial" / "clients.parquet")
    assert ref_clients["client_id"].duplicated().any()  # some client returned with its residual
    ref_adapter = load_file(str(tmp_path / "serial" / "adapter" / "adapter_model.safetensors"))
    for n in (1, 2):
        rounds = pd.read_parquet(tmp_path / f"ray{n}" / "rounds.parquet")
        clients = pd.read_parquet(tmp_path / f"ray{n}" / "clients.parquet")
        pd.testing.assert_frame_equal(
            rounds[EXACT_ROUND_COLUMNS], ref_rounds[EXACT_ROUND_COLUMNS], check_exact=True
        )
        # the actors evaluate the same batches as the serial run, summed in batch order
        pd.testing.assert_series_equal(rounds["test_loss"], ref_rounds["test_loss"], check_exact=True)
        pd.testing.assert_frame_equal(
            clients[EXACT_CLIENT_COLUMNS], ref_clients[EXACT_CLIENT_COLUMNS], check_exact=True
        )
        assert set(clients["actor_id"]) == {f"actor-{i}" for i in range(n)}
        adapter = load_file(str(tmp_path / f"ray{n}" / "adapter" / "adapter_model.safetensors"))
        assert adapter.keys() == ref_adapter.keys()
        assert all((adapter[k] == ref_adapter[k]).all() for k in adapter)


def test_fractional_gpus_pack_two_actors_per_gpu(ray_session):
    """Two fake GPUs and 0.5 GPU per actor: four actors, each GPU shared by exactly two. With
    no CUDA here, each actor says so and trains on the CPU."""
    cfg = tiny_config("runtime.backend=ray", "runtime.num_actors=4", "runtime.num_gpus_per_actor=0.5",
                      "runtime.num_cpus_per_actor=0.5")  # fmt: skip
    backend = RayBackend(cfg)
    try:
        info = backend.describe()
        per_gpu = Counter(g for i in info for g in i["gpu_ids"])
        assert all(len(i["gpu_ids"]) == 1 for i in info)
        assert sorted(per_gpu.values()) == [2, 2]
        assert all(i["device"] == "cpu" and "CUDA unavailable" in i["device_note"] for i in info)
        assert len({i["pid"] for i in info}) == 4
        assert ray.available_resources().get("GPU", 0) == pytest.approx(0)
    finally:
        backend.close()


def test_adaptive_fslora_gives_the_same_numbers_on_ray_and_serial(ray_session, tmp_path):
    """FSLoRA sketches, independent sampling and the adaptive plan: the sketch is drawn from the
    client's round seed, so any actor draws the same one."""
    common = (
        "federation.rounds=3", "model.lora_rank=8", "model.lora_alpha=16", "algorithm.kind=fslora",
        "sampling.kind=independent", "controller.kind=adaptive", "channel.compute_samples_per_s=40",
        "channel.compute_sigma=1.0",
    )  # fmt: skip
    run_serial(tiny_config(*common), tmp_path / "serial")
    run_on_ray(tiny_config(*common, "runtime.backend=ray", "runtime.num_actors=2"), tmp_path / "ray")
    columns = [*EXACT_CLIENT_COLUMNS, "sample_prob", "components", "upload_s", "compute_s"]
    for name, cols in (("rounds", [*EXACT_ROUND_COLUMNS, "sim_time_s", "objective"]), ("clients", columns)):
        ref = pd.read_parquet(tmp_path / "serial" / f"{name}.parquet")
        got = pd.read_parquet(tmp_path / "ray" / f"{name}.parquet")
        pd.testing.assert_frame_equal(got[cols], ref[cols], check_exact=True)
