"""The runner's job table in moto (or any DynamoDB endpoint), as infra/runner.py declares it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TASKRUNNER_DIR = Path(__file__).resolve().parents[2] / "taskrunner"
if str(TASKRUNNER_DIR) not in sys.path:  # the Lambda package's modules are top-level
    sys.path.insert(0, str(TASKRUNNER_DIR))

from job_store import (  # noqa: E402 - found through the path above
    INDEX_PROJECTIONS,
    INDEXES,
    PARTITION_KEY,
    SORT_KEY,
)

NUMBERS = {"readyAt", "retryAt", "sweepSince", "recordedAt"}  # the indexes' range keys are numbers


def create_job_table(dynamodb: Any, name: str) -> str:
    """Create the table with its keys and indexes; returns its name."""
    attributes = {PARTITION_KEY: "S", SORT_KEY: "S"}
    for hash_key, range_key in INDEXES.values():
        attributes[hash_key] = "S"
        attributes[range_key] = "N" if range_key in NUMBERS else "S"
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": attribute, "AttributeType": kind}
            for attribute, kind in attributes.items()
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": hash_key, "KeyType": "HASH"},
                    {"AttributeName": range_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": INDEX_PROJECTIONS[index]},
            }
            for index, (hash_key, range_key) in INDEXES.items()
        ],
    )
    return name
