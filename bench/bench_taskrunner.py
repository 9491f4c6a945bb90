"""Benchmark of the runner Lambda: cold start against bare boto3, and per-record overhead.

Prints figures; asserts nothing (a benchmark, not a timed test). ECS is the fake endpoint from
tests/fakes on 127.0.0.1, so no call leaves the machine. Targets from the issue: the handler
adds at most 10% to the cold start of `import boto3; boto3.client("ecs")`, and at most 1 ms
per record beyond the RunTask call itself.

    venv/bin/python bench/bench_taskrunner.py [--runs 11] [--records 1000]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

PROJECT_DIR = Path(__file__).resolve().parents[1]
TASKRUNNER_DIR = PROJECT_DIR / "taskrunner"
sys.path[:0] = [str(PROJECT_DIR), str(TASKRUNNER_DIR)]

from dispatch import process_uploads  # noqa: E402 - the Lambda's modules are top-level
from runner_settings import load_settings  # noqa: E402
from services import Services  # noqa: E402
from task_starter import build_run_task_request  # noqa: E402
from upload_events import parse_record  # noqa: E402

from tests.fakes.fake_ecs import running_fake_ecs  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient

RUNNER_ENV = {
    "CLUSTER_ARN": "arn:aws:ecs:us-east-1:123456789012:cluster/jobs",
    "TASK_DEFINITION_ARN": "arn:aws:ecs:us-east-1:123456789012:task-definition/job:1",
    "CONTAINER_NAME": "job",
    "SUBNETS": "subnet-0a1b2c3d,subnet-4e5f6a7b",
    "SECURITY_GROUPS": "sg-0123abcd",
    "ASSIGN_PUBLIC_IP": "DISABLED",
    "CAPACITY_PROVIDER": "FARGATE",
    "RESULT_PREFIX": "results/",
    "BACKLOG_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-backlog",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-dlq",
    "MAX_CONCURRENT_TASKS": "0",
}
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}

# Each child measures from its first statement, so interpreter start-up is left out of both.
BARE_COLD_START = """
import time; started = time.perf_counter()
import boto3
boto3.client("ecs")
print(time.perf_counter() - started)
"""
BARE_WITH_CALL = """
import json, sys, time; started = time.perf_counter()
import boto3
boto3.client("ecs").run_task(**json.loads(sys.argv[1]))
print(time.perf_counter() - started)
"""
HANDLER_COLD_START = """
import json, sys, time; started = time.perf_counter()
sys.path.insert(0, sys.argv[2])
import handler
handler.handler(json.loads(sys.argv[1]), None)
print(time.perf_counter() - started)
"""


def s3_record(number: int) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-28T14:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "uploads-bucket"},
            "object": {
                "key": f"uploads/quarterly+report+{number}+%C3%BC.csv",
                "size": 79270,
                "eTag": "0123456789abcdef0123456789abcdef",
                "sequencer": f"0062B5F3A8C1D2{number:06X}",
            },
        },
    }


def child_seconds(script: str, env: dict[str, str], *args: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(done.stdout.strip().splitlines()[-1])


def cold_starts(url: str, runs: int) -> dict[str, list[float]]:
    env = {**os.environ, **DUMMY_AWS, **RUNNER_ENV, "AWS_ENDPOINT_URL_ECS": url}
    env.pop("AWS_ENDPOINT_URL", None)
    event = json.dumps({"Records": [s3_record(0)]})
    settings = load_settings(RUNNER_ENV)
    request = json.dumps(build_run_task_request(parse_record(s3_record(1)), settings))
    times: dict[str, list[float]] = {"bare": [], "bare+call": [], "handler": []}
    for _ in range(runs):  # interleaved, so drift in machine load hits all three alike
        times["bare"].append(child_seconds(BARE_COLD_START, env))
        times["bare+call"].append(child_seconds(BARE_WITH_CALL, env, request))
        times["handler"].append(child_seconds(HANDLER_COLD_START, env, event, str(TASKRUNNER_DIR)))
    return times


class InstantEcs:
    """Answers RunTask at once: what remains of a record's time is the runner's own work."""

    def run_task(self, **_: object) -> dict[str, Any]:
        return {"tasks": [{"taskArn": "arn:aws:ecs:us-east-1:123456789012:task/jobs/1"}]}


def per_record_seconds(run: Callable[[], object], records: int) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="cold starts of each kind")
    parser.add_argument("--records", type=int, default=1000, help="records per timed event")
    options = parser.parse_args()
    settings = load_settings(RUNNER_ENV)
    # Lambda writes every log line; so does the benchmark, to memory.
    log = logging.getLogger("taskrunner")
    log.addHandler(logging.StreamHandler(io.StringIO()))
    log.setLevel(logging.INFO)
    log.propagate = False

    with running_fake_ecs() as fake:
        times = cold_starts(fake.url, options.runs)
        bare, with_call, ours = (statistics.median(times[name]) for name in times)
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(f"cold start, median of {options.runs} (from first statement, no interpreter start):")
        print(f"  import boto3 + client('ecs')           {bare * 1000:8.1f} ms")
        print(f"  ... + one RunTask to the local fake      {with_call * 1000:8.1f} ms")
        print(f"  handler: import + client + first event {ours * 1000:8.1f} ms")
        print(
            f"  handler vs bare import+client:         {(ours / bare - 1) * 100:+8.1f} %"
            f"   (target <= +10 %; includes the handler's one API call)"
        )
        print(f"  handler vs bare import+client+call:    {(ours / with_call - 1) * 100:+8.1f} %")

        records = options.records
        event = {"Records": [s3_record(number) for number in range(records)]}
        instant = Services(cast("ECSClient", InstantEcs()))
        process_uploads(event, settings, instant)  # warm: first-call imports and caches
        own = min(
            per_record_seconds(lambda: process_uploads(event, settings, instant), records)
            for _ in range(5)
        )
        print(f"per record, {records} records, ECS answering instantly (runner's own work):")
        print(f"  {own * 1e6:8.1f} us/record   (target <= 1000 us)")

        http_records = min(records, 300)
        http_event = {"Records": event["Records"][:http_records]}
        ecs = fake.client()
        over_http = Services(ecs)
        requests = [
            build_run_task_request(parse_record(record), settings)
            for record in http_event["Records"]
        ]
        process_uploads(http_event, settings, over_http)  # warm the connection and the model
        fake.clear_faults()
        raw = per_record_seconds(lambda: [ecs.run_task(**one) for one in requests], http_records)
        full = per_record_seconds(
            lambda: process_uploads(http_event, settings, over_http), http_records
        )
        print(f"per record over HTTP to the local fake, {http_records} records:")
        print(f"  bare RunTask calls {raw * 1e6:8.1f} us, through the runner {full * 1e6:8.1f} us")
        print(f"  difference {(full - raw) * 1e6:+8.1f} us/record")


if __name__ == "__main__":
    main()
