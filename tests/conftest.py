"""Fixtures shared by every test folder."""

from __future__ import annotations

import gc
import json
import os
import uuid

# awscrt is installed for the benchmark's reference reader; with it importable botocore signs
# S3 requests through the CRT. The task's image has no awscrt: test what it runs.
os.environ.setdefault("BOTO_DISABLE_CRT", "true")

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from jobctl.emulator import point_at_emulator, running_emulator
from tests.fakes.virtual_clock import Simulation
from tests.sandbox import require_bubblewrap

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collecting imported (boto3's and moto's models, Pulumi's SDK: most of a worker's
    objects) lives to the end of the session: frozen, it is not walked by every full collection
    the tests' own garbage sets off, nor by pytest's at the end (about 5 s of a run's CPU here)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _no_simulation_outlives_its_test() -> Iterator[None]:
    """A virtual-clock run's processes are ended when its test ends (Simulation.close): left
    parked, they keep all the run made alive for the rest of the session."""
    yield
    Simulation.close_all()


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    """One moto server on 127.0.0.1 for the whole session; stopped when the session ends."""
    with running_emulator() as url:
        yield url


@pytest.fixture
def emulator_env(emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test's boto3 clients (and any child process it starts) at the emulator."""
    env: dict[str, str] = {}
    point_at_emulator(env, emulator_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return emulator_url


@pytest.fixture
def s3(emulator_env: str) -> S3Client:
    """A client of the emulator's S3."""
    return boto3.client("s3")


@pytest.fixture
def bucket(s3: S3Client) -> str:
    """A new, empty bucket for this test alone."""
    name = f"task-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def versioned_bucket(s3: S3Client, bucket: str) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region for in-process moto (mock_aws); no endpoint override."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture(scope="session")
def bubblewrap() -> None:
    """For tests that run a job under the sandbox: skipped (failed under CI) without bubblewrap."""
    require_bubblewrap()


@pytest.fixture(scope="session")
def job_definition() -> dict[str, Any]:
    """The job's container definition as the dev stack declares it (the program under mocks)."""
    from jobctl.evaluate import evaluate

    task_definition = evaluate("dev").one("aws:ecs/taskDefinition:TaskDefinition")
    (definition,) = json.loads(task_definition.inputs["containerDefinitions"])
    found: dict[str, Any] = definition
    return found
