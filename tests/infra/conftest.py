"""Each committed stack is evaluated once per session under Pulumi mocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobctl.evaluate import PROJECT_DIR, Evaluation, committed_stacks, evaluate

STACKS = committed_stacks()
# The runner's modules, top-level as in the Lambda's zip: tests hold the infrastructure to what
# the runner reads and writes by importing them (put this folder on sys.path first).
TASKRUNNER_DIR = PROJECT_DIR / "taskrunner"


@pytest.fixture(scope="session")
def evaluations() -> dict[str, Evaluation]:
    return {stack: evaluate(stack) for stack in STACKS}


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest, evaluations: dict[str, Evaluation]) -> Evaluation:
    return evaluations[request.param]


@pytest.fixture
def dev(evaluations: dict[str, Evaluation]) -> Evaluation:
    return evaluations["dev"]


@pytest.fixture
def prod(evaluations: dict[str, Evaluation]) -> Evaluation:
    return evaluations["prod"]


def as_json(value: Any) -> Any:
    """Mock inputs carry JSON-valued properties (policies, container definitions) as strings."""
    return json.loads(value) if isinstance(value, str) else value
