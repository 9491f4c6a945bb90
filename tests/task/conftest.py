"""Fixtures for the task's tests (S3 and its buckets come from tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from task.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SMALL_PART = 64 * 1024  # the settings' floor: many ranges from small, fast objects


@pytest.fixture
def settings_for() -> Callable[..., Settings]:
    def make(bucket: str, key: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bucket": bucket,
            "key": key,
            "version_id": None,
            "result_bucket": bucket,
            "result_prefix": "results/",
            "part_size": SMALL_PART,
            "concurrency": 4,
        }
        values.update(overrides)
        return Settings(**values)

    return make


def read_result(s3: S3Client, bucket: str, key: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=f"results/{key}.json")["Body"].read()
    result: dict[str, Any] = json.loads(body)
    return result


def result_keys(s3: S3Client, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="results/")
    return [item["Key"] for item in listing.get("Contents", [])]


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
