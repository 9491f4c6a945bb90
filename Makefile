# The few verbs a newcomer needs. Every target sets up ./venv itself (the same virtualenv
# `pulumi up` uses), so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The task image's runtime dependencies alone (task/requirements.txt), for the task bench, on
# the image's Python (3.13) where this machine has it, on PATH or from pyenv; else on python3.
# 3.11 starts the job ~0.1 CPU-s slower than 3.13. Set TASK_PYTHON to choose; `make clean`
# first to rebuild venv-task with another.
TASK_PYTHON ?= $(or $(shell python3.13 -c "" >/dev/null 2>&1 && echo python3.13),$(lastword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13)),$(PYTHON))
TASK_VENV := venv-task
TASK_STAMP := $(TASK_VENV)/.installed
ARGS ?=

.PHONY: test lint typecheck pytest demo bench fmt clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## make test: lint, type-check and run every test (the command CI runs)
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint task/Dockerfile examples/*/Dockerfile
	$(BIN)/shellcheck examples/*/*.sh

typecheck: $(STAMP)
	$(BIN)/mypy .

# Two workers, each test handed out on its own (loadgroup), so that the two big-batch proofs
# start first and side by side; PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## make demo: the whole pipeline on an embedded AWS emulator (ARGS="--help" for options)
demo: $(STAMP)
	$(BIN)/python -m jobctl demo $(ARGS)

$(TASK_STAMP): task/requirements.txt
	$(TASK_PYTHON) -m venv $(TASK_VENV)
	$(TASK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r task/requirements.txt
	touch $@

## make bench: the benchmarks under bench/, printing their figures (the task's needs root, cgroup v1
## and nginx: apt-get install -y nginx-light)
bench: $(STAMP) $(TASK_STAMP)
	$(BIN)/python bench/bench_taskrunner.py --lambda-python $(TASK_VENV)/bin/python
	$(BIN)/python bench/bench_task.py --task-python $(TASK_VENV)/bin/python $(ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(TASK_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
