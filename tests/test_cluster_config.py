"""The cluster launcher configs (cluster.yaml for AWS, cluster-onprem.yaml for own machines).

`ray up` cannot run here (no cloud, no SSH), so these tests check what would make it fail or make
the cluster unsafe, offline: Ray's own schema and config preparation, the pinned image against the
project's Ray and Python, the dashboard bound to localhost only, token authentication on every
node, and the README's cluster commands against the files.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from ray.autoscaler._private.util import prepare_config, validate_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]
RAY_PACKAGE = Path(ray.autoscaler.__file__).resolve().parents[1]
# The rayproject/ray images run as the user `ray`: this is $HOME inside the container.
CONTAINER_HOME = "/home/ray"
LOCALHOST = {"127.0.0.1", "localhost", "::1"}
IMAGE_TAG = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3\d+)-(?P<platform>gpu|cu\d+)$")


def load(name: str) -> dict[str, Any]:
    with open(ROOT / name) as f:
        return yaml.safe_load(f)


def all_strings(node: Any) -> Iterator[str]:
    """Every key and scalar string in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from all_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_strings(item)
    elif isinstance(node, str):
        yield node


def shell_commands(lines: list[str]) -> Iterator[list[str]]:
    """Each simple command of a list of shell lines, as words (split on ;, && and ||)."""
    for line in lines:
        for part in re.split(r";|&&|\|\|", line):
            words = shlex.split(part)
            if words:
                yield words


def ray_starts(lines: list[str]) -> list[tuple[dict[str, str], list[str]]]:
    """(environment prefix, arguments) of every `ray start` in a list of shell lines."""
    starts = []
    for words in shell_commands(lines):
        env = {}
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        if words[:2] == ["ray", "start"]:
            starts.append((env, words[2:]))
    return starts


def flag_values(args: list[str], flag: str) -> list[str]:
    """Values of `--flag=value` and `--flag value` in an argument list."""
    values = []
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
    return values


def docker_words(cfg: dict[str, Any], role: str) -> list[str]:
    """The `docker run` options a node of this role gets: shared ones, then the role's own."""
    docker = cfg["docker"]
    options = docker.get("run_options", []) + docker.get(f"{role}_run_options", [])
    return [word for option in options for word in shlex.split(option)]


def docker_env(words: list[str]) -> dict[str, str]:
    env = {}
    for value in flag_values(words, "-e") + flag_values(words, "--env"):
        key, _, val = value.partition("=")
        env[key] = val
    return env


def pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def image_tag(cfg: dict[str, Any]) -> re.Match[str]:
    images = {cfg["docker"][key] for key in ("image", "head_image", "worker_image") if key in cfg["docker"]}
    assert len(images) == 1, f"head and workers must run one image, got {images}"
    image = images.pop()
    match = IMAGE_TAG.match(image)
    assert match, f"docker.image {image!r} is not a pinned rayproject/ray:X.Y.Z-pyXY-gpu tag"
    return match


@pytest.fixture(scope="module")
def ray_schema() -> dict[str, Any]:
    with open(RAY_PACKAGE / "autoscaler" / "ray-schema.json") as f:
        return json.load(f)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_rays_own_schema_and_preparation(name: str, ray_schema: dict[str, Any]) -> None:
    cfg = load(name)
    jsonschema.validate(cfg, ray_schema)
    # What `ray up` does before it contacts the provider: fill in the provider's defaults, merge
    # the setup commands, check the docker section and node types, then validate again.
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("name", CONFIGS)
def test_nothing_binds_all_interfaces(name: str) -> None:
    strings = [s for s in all_strings(load(name)) if "0.0.0.0" in s]
    assert not strings, f"{name} names 0.0.0.0: {strings}"
    assert "0.0.0.0" not in (ROOT / name).read_text()


@pytest.mark.parametrize("name", CONFIGS)
def test_dashboard_and_job_server_listen_on_localhost_only(name: str) -> None:
    cfg = load(name)
    heads = ray_starts(cfg["head_start_ray_commands"])
    assert len(heads) == 1 and "--head" in heads[0][1], heads
    # Ray's default has changed across versions: the flag must say localhost explicitly.
    assert flag_values(heads[0][1], "--dashboard-host") in ([host] for host in LOCALHOST), heads[0][1]
    for _, args in ray_starts(cfg["worker_start_ray_commands"]):
        assert set(flag_values(args, "--dashboard-host")) <= LOCALHOST, args


@pytest.mark.parametrize("name", CONFIGS)
def test_image_runs_the_projects_ray(name: str) -> None:
    tag = image_tag(load(name))
    image_ray = Version(tag["ray"])
    assert image_ray == Version(importlib.metadata.version("ray")), "the image's Ray is not the installed one"
    ray_requirement = next(
        Requirement(dep) for dep in pyproject()["project"]["dependencies"] if Requirement(dep).name == "ray"
    )
    assert ray_requirement.specifier.contains(image_ray), f"{image_ray} does not meet {ray_requirement}"
    pins = re.findall(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert pins == [str(image_ray)], f"constraints.txt pins ray {pins}, the image has {image_ray}"


@pytest.mark.parametrize("name", CONFIGS)
def test_image_python_is_one_the_project_and_ray_accept(name: str) -> None:
    py = image_tag(load(name))["py"]
    python = f"{py[0]}.{py[1:]}"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(python), f"image Python {python} is outside requires-python {requires}"
    classifiers = importlib.metadata.metadata("ray").get_all("Classifier") or []
    assert f"Programming Language :: Python :: {python}" in classifiers, f"Ray does not list Python {python}"


@pytest.mark.parametrize("name", CONFIGS)
def test_token_authentication_on_head_and_workers(name: str) -> None:
    cfg = load(name)
    text = (ROOT / name).read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    assert "RAY_AUTH_TOKEN=" not in text, "a token must never be written into the config"
    for role, commands in (("head", "head_start_ray_commands"), ("worker", "worker_start_ray_commands")):
        # Every process in the container (raylet, job server, job drivers, `ray exec`) ...
        assert docker_env(docker_words(cfg, role)).get("RAY_AUTH_MODE") == "token", role
        # ... and `ray start` itself, even where the docker section is removed.
        starts = ray_starts(cfg[commands])
        assert starts, f"no `ray start` in {commands}"
        for env, args in starts:
            assert env.get("RAY_AUTH_MODE") == "token", f"{role}: ray start {' '.join(args)}"
    # The token: the file `ray get-auth-token --generate` writes here, copied to Ray's default token
    # path on every node (file_mounts go to the head and from it to each worker).
    from ray._private.authentication import authentication_token_setup

    default_path = authentication_token_setup._get_default_token_path()
    relative = "~/" + str(default_path.relative_to(Path.home()))
    assert cfg["file_mounts"].get(relative) == relative, cfg["file_mounts"]


@pytest.mark.parametrize("name", CONFIGS)
def test_gpus_go_to_workers_only(name: str) -> None:
    cfg = load(name)
    assert "--gpus" not in docker_words(cfg, "head"), "the head (no GPU) would fail to start its container"
    assert flag_values(docker_words(cfg, "worker"), "--gpus") == ["all"]
    head_args = ray_starts(cfg["head_start_ray_commands"])[0][1]
    assert flag_values(head_args, "--num-gpus") == ["0"], "client actors belong on the GPU workers"


@pytest.mark.parametrize("name", CONFIGS)
def test_project_is_installed_in_the_container(name: str) -> None:
    cfg = load(name)
    remote = next(path for path, local in cfg["file_mounts"].items() if local == ".")
    setup = " ; ".join(cfg["setup_commands"])
    words = [w for cmd in shell_commands(cfg["setup_commands"]) for w in cmd]
    assert "wordnet-base" in words and "dataset-fashion-mnist" in words, setup
    editable = flag_values(words, "-e")
    assert editable == [remote.replace("~", "$HOME", 1) + "[vision]"], (editable, remote)
    # Ray pinned to the image's own version, so pip keeps the image's build.
    assert f"ray[default]=={image_tag(cfg)['ray']}" in words, setup


@pytest.mark.parametrize("name", CONFIGS)
def test_paper_data_roots_are_visible_in_the_container(name: str) -> None:
    cfg = load(name)
    mounts = [v.split(":")[1] for v in flag_values(docker_words(cfg, "worker"), "--volume")]
    mounts += [v.split(":")[1] for v in flag_values(docker_words(cfg, "worker"), "-v")]
    for config in sorted((ROOT / "jobs" / "configs" / "paper").glob("*.yaml")):
        root = load(str(config.relative_to(ROOT)))["data"]["root"]
        assert any(Path(root).is_relative_to(m) for m in mounts), f"{config.name}: {root} not under {mounts}"


def test_aws_host_ami_is_not_rays_legacy_default() -> None:
    cfg = load("cluster.yaml")
    amis = {t["node_config"]["ImageId"] for t in cfg["available_node_types"].values()}
    assert len(amis) == 1 and re.fullmatch(r"ami-[0-9a-f]{8,17}", next(iter(amis))), amis
    # Ray's built-in DEFAULT_AMI is the Deep Learning AMI for Ubuntu 18.04 (old drivers, Python 3.7-3.9
    # outside the container); read from its source since importing it needs boto3.
    source = (RAY_PACKAGE / "autoscaler" / "_private" / "aws" / "config.py").read_text()
    node = next(
        n
        for n in ast.parse(source).body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "DEFAULT_AMI" for t in n.targets)
    )
    legacy = set(ast.literal_eval(node.value).values()) | {"ami-0a2363a9cff180a64"}
    assert not amis & legacy, amis


def test_readme_cluster_commands_match_the_configs() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    for words in shell_commands([line.split("#")[0] for line in lines]):
        if words[:1] == ["ray"] and len(words) > 2 and words[1] in {"up", "dashboard", "down", "rsync-down"}:
            assert (ROOT / words[2]).is_file(), f"README: {' '.join(words)} names no config in the repo"
    for block in blocks:
        if "ray job submit" not in block:
            continue
        assert "RAY_AUTH_MODE=token" in block.split("ray job submit")[0], "README: submit without the token"
        # A job writes (and resumes) its run directory inside the head's container.
        for flag, path in re.findall(r"(--out|--resume)\s+(\S+)", block):
            assert path.startswith(CONTAINER_HOME + "/"), f"README: {flag} {path} not under {CONTAINER_HOME}"
