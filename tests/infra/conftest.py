"""Each committed stack is evaluated once per session under Pulumi mocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

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


@pytest.fixture
def declared_table_on_moto(
    dev: Evaluation, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, str]]:
    """dev's table, created on moto from exactly the inputs the program declares."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    inputs = dev.one("aws:dynamodb/table:Table").inputs
    with mock_aws():
        client = boto3.client("dynamodb")
        name = dev.one("aws:dynamodb/table:Table").outputs["name"]
        client.create_table(
            TableName=name,
            BillingMode=inputs["billingMode"],
            KeySchema=[
                {"AttributeName": inputs["hashKey"], "KeyType": "HASH"},
                {"AttributeName": inputs["rangeKey"], "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": a["name"], "AttributeType": a["type"]}
                for a in inputs["attributes"]
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": index["name"],
                    "KeySchema": [
                        {"AttributeName": key["attributeName"], "KeyType": key["keyType"]}
                        for key in index["keySchemas"]
                    ],
                    "Projection": {"ProjectionType": index["projectionType"]},
                }
                for index in inputs["globalSecondaryIndexes"]
            ],
        )
        yield client, name
