"""The AWS clients, clock and randomness the runner works with, made once per container.

ECS is made at import; DynamoDB (the job records) and SQS (reports, the backlog) on first use.
Tests and the simulation pass their own clients, clock, sleep and random source; the runner's
code is the same.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from job_store import JobStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_ecs.client import ECSClient
    from mypy_boto3_sqs.client import SQSClient

# ECS answers RunTask within a second or two; a stuck connection should be retried, not waited
# on for botocore's default 60 s.
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10
# Standard mode retries throttling and server errors with jittered exponential backoff (up to
# 1, 2, 4 s). An upload that still cannot start after that waits in the backlog instead: its
# delay there is minutes, free, and does not hold the invocation (or the cap's lock).
MAX_ATTEMPTS = 4
RETRY_MODE: Literal["standard"] = "standard"


def client_config(
    *,
    max_attempts: int = MAX_ATTEMPTS,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> Config:
    """Every client's retry and timeout settings (tests shorten the timeouts)."""
    return Config(
        retries={"mode": RETRY_MODE, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def make_ecs_client(config: Config | None = None) -> ECSClient:
    """An ECS client for the Lambda's region (AWS_REGION), with the runner's retry settings."""
    return boto3.client("ecs", config=config or client_config())


class Services:
    """What the runner calls: clients (made on first use unless given), clock, sleep, random."""

    def __init__(
        self,
        ecs: ECSClient,
        *,
        sqs: SQSClient | None = None,
        dynamodb: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        config: Config | None = None,
        emit_metric: Callable[[str], None] | None = None,
    ) -> None:
        self.ecs = ecs
        self._sqs = sqs
        self._dynamodb = dynamodb
        self.clock = clock  # seconds since the epoch: leases and ages are compared across hosts
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._config = config
        # stdout, not the logger: CloudWatch reads a metric from a log event that is the
        # embedded-metric JSON itself, which Lambda's JSON log format would wrap.
        self.emit_metric = emit_metric or _print_line
        self._stores: dict[tuple[str, int], JobStore] = {}

    @property
    def sqs(self) -> SQSClient:
        if self._sqs is None:
            self._sqs = self._client("sqs")
        return self._sqs

    @property
    def dynamodb(self) -> DynamoDBClient:
        if self._dynamodb is None:
            self._dynamodb = self._client("dynamodb")
        return self._dynamodb

    def job_store(self, settings: Any) -> JobStore:
        """The job table the settings name (one store per table, made on first use)."""
        key = (settings.state_table, settings.record_days)
        if key not in self._stores:
            self._stores[key] = JobStore(
                self.dynamodb,
                settings.state_table,
                record_days=settings.record_days,
                sleep=self.sleep,
                rng=self.rng,
            )
        return self._stores[key]

    def _client(self, service: Literal["sqs", "dynamodb"]) -> Any:
        return boto3.client(service, config=self._config or client_config())


def _print_line(line: str) -> None:
    print(line, flush=True)
