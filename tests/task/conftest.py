"""Fixtures for the task's tests: S3 on the shared loopback emulator, one bucket per test."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from task.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SMALL_PART = 64 * 1024  # the settings' floor: many ranges from small, fast objects


@pytest.fixture
def s3(emulator_env: str) -> S3Client:
    return boto3.client("s3")


@pytest.fixture
def bucket(s3: S3Client) -> str:
    name = f"task-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def versioned_bucket(s3: S3Client, bucket: str) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


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
