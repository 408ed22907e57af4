# `make demo` and `make test` each create .venv if missing, install, and run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The read commands (`frontier studies/trials/pareto/export/ui`) look in runs/ by default: the demo writes there.
RUN_DIR ?= runs
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo ui test lint test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to 2.13.0: on this platform that is the local CPU build; any other spec pulls CUDA wheels.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/frontier run configs/quickstart.yaml --run-dir $(RUN_DIR)
	@echo
	@echo "frontier is in $(BIN): run 'source $(BIN)/activate' to put it on PATH, then e.g."
	@echo "  frontier trials quickstart     frontier pareto quickstart     frontier ui quickstart"

# The MLflow UI on the demo study (Ctrl-C stops it); `frontier ui` prints the study's runs view once it answers.
ui: install
	$(BIN)/frontier ui quickstart --run-dir $(RUN_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# --durations: CI's log lists the slowest tests, which is where the suite's time goes.
test: install lint
	$(BIN)/pytest -q --durations=30

test-fast: install
	$(BIN)/pytest -q -m "not slow and not integration"

bench: install
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_kernels.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
