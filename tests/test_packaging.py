"""Layout rules: cluster.yaml matches Ray's own schema; a run's start is lean. (That the science
package never imports ray, and its layers, are import-linter contracts in pyproject.toml.)"""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from tests.conftest import ROOT


def _passes_in_a_fresh_python(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cluster_yaml_validates_against_rays_schema():
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert "gpu_worker" in types and "InstanceType" in types["head"]["node_config"]
    assert any("pip install" in c and "fedlora-ray" in c for c in config["setup_commands"])


def test_a_cluster_yaml_with_a_typo_fails_the_same_check():
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema accepted an unknown key")


def test_config_checks_and_the_driver_never_import_peft():
    """A run's start is lean: reading and validating a config imports neither transformers nor
    peft, the driver's code needs neither, and the preflight reads the model's shapes with
    transformers alone; the driver saves the adapter with peft's config text made by a worker
    (peft loads only where LoRA is built)."""
    code = (
        "import sys\n"
        "from fedlora_ray.components import load_run_config\n"
        "cfg = load_run_config('jobs/configs/quickstart.yaml')\n"
        "import actors.driver\n"
        "assert 'transformers' not in sys.modules and 'peft' not in sys.modules\n"
        "from fedlora_ray.preflight import check_run\n"
        "check_run(cfg)\n"
        "import tempfile, torch\n"
        "from fedlora_ray.lora.adapter import Adapter\n"
        "from fedlora_ray.lora.save import save_adapter\n"
        "pair = (torch.zeros(384, 8), torch.zeros(8, 384))\n"
        "adapter = Adapter({'encoder.layer.0.attention.self.query': pair}, {})\n"
        "save_adapter(adapter, cfg.model, ('a',), tempfile.mkdtemp() + '/adapter', '{}')\n"
        "assert 'peft' not in sys.modules\n"
    )
    _passes_in_a_fresh_python(code)
