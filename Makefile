# `make quickstart` runs the main job, `make vision` the vision default, `make llm` the causal-LM
# default (SmolLM2-135M-Instruct on WordNet definitions); `make test` runs the whole
# suite. All install first.
VENV := .venv
BIN := $(VENV)/bin
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export HF_HUB_OFFLINE := 1

.PHONY: install quickstart vision llm smoke test lint bench

$(VENV)/.installed: pyproject.toml constraints.txt scripts/setup.sh
	scripts/setup.sh

install: $(VENV)/.installed

quickstart: install
	$(BIN)/fedlora-ray run jobs/configs/quickstart.yaml

vision: install
	$(BIN)/fedlora-ray run jobs/configs/vision_quickstart.yaml

llm: install
	$(BIN)/fedlora-ray run jobs/configs/llm_quickstart.yaml

smoke: install
	$(BIN)/fedlora-ray run jobs/configs/smoke.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy fedlora_ray
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/round_overhead.py
