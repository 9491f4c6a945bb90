# The few verbs a newcomer needs. Every target sets up ./venv itself (the same virtualenv
# `pulumi up` uses), so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The task image's runtime dependencies alone (task/requirements.txt), for the task bench;
# TASK_PYTHON=python3.13 builds it on the image's Python where that is installed.
TASK_PYTHON ?= $(PYTHON)
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
	$(BIN)/hadolint task/Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy .

pytest: $(STAMP)
	$(BIN)/python -m pytest

## make demo: the whole pipeline on an embedded AWS emulator (ARGS="--help" for options)
demo: $(STAMP)
	$(BIN)/python -m jobctl demo $(ARGS)

$(TASK_STAMP): task/requirements.txt
	$(TASK_PYTHON) -m venv $(TASK_VENV)
	$(TASK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r task/requirements.txt
	touch $@

## make bench: the benchmarks under bench/, printing their figures (the task's needs root)
bench: $(STAMP) $(TASK_STAMP)
	$(BIN)/python bench/bench_taskrunner.py
	$(BIN)/python bench/bench_task.py --task-python $(TASK_VENV)/bin/python $(ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(TASK_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
