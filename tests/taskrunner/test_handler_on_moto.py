"""The handler as Lambda imports it, against moto (ECS, DynamoDB, SQS): every kind of event."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
from uploads import MalformedRecordsError

from tests.taskrunner.conftest import SPECIAL_KEYS, load_event, s3_event, s3_record

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient

Moto = tuple["ECSClient", dict[str, str]]
TaskEnvironment = Callable[[str], dict[str, str]]


class FakeContext:
    """The one LambdaContext method the handler uses."""

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


@pytest.fixture
def handler_module(moto_ecs: Moto, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """`handler` imported as Lambda imports it: settings and client made at import."""
    _, env = moto_ecs
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = (
        importlib.reload(sys.modules["handler"])
        if "handler" in sys.modules
        else importlib.import_module("handler")
    )
    yield module
    sys.modules.pop("handler", None)  # the next import reads the next test's environment


def test_a_put_starts_one_task_with_bucket_and_key(
    handler_module: ModuleType, task_environment: TaskEnvironment
) -> None:
    summary = handler_module.handler(load_event("put_single.json"), FakeContext())
    assert list(summary["started"]) == ["uploads/report.csv"]
    assert summary["skipped"] == {}
    environment = task_environment(summary["started"]["uploads/report.csv"])
    assert environment.pop("JOB_ATTEMPT") == "1"
    assert environment.pop("JOB_CLAIM") == "1"
    assert len(environment.pop("JOB_ID")) == 32
    assert environment == {"S3_BUCKET": "uploads-bucket", "S3_KEY": "uploads/report.csv"}
    json.dumps(summary)  # what Lambda returns must serialise


def test_the_handler_accepts_no_context_for_in_process_redrives(
    handler_module: ModuleType,
) -> None:
    summary = handler_module.handler(load_event("copy.json"), None)
    assert list(summary["started"]) == ["uploads/copied.csv"]


def test_the_started_task_uses_the_configured_cluster_and_task_definition(
    handler_module: ModuleType, moto_ecs: Moto
) -> None:
    ecs, env = moto_ecs
    summary = handler_module.handler(load_event("put_single.json"), None)
    (task,) = ecs.describe_tasks(
        cluster=env["CLUSTER_ARN"], tasks=list(summary["started"].values())
    )["tasks"]
    assert task["clusterArn"] == env["CLUSTER_ARN"]
    assert task["taskDefinitionArn"] == env["TASK_DEFINITION_ARN"]
    assert task["startedBy"] == "s3-upload"


@pytest.mark.parametrize(
    ("event_file", "version_id"),
    [
        ("versioned_put.json", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"),
        ("multipart_upload.json", "Vm9sb2xvbG8uTXVsdGlwYXJ0"),
    ],
)
def test_a_versioned_upload_passes_its_version_to_the_task(
    handler_module: ModuleType,
    task_environment: TaskEnvironment,
    event_file: str,
    version_id: str,
) -> None:
    summary = handler_module.handler(load_event(event_file), None)
    (task_arn,) = summary["started"].values()
    assert task_environment(task_arn)["S3_VERSION_ID"] == version_id


def test_every_record_of_a_multi_record_event_starts_its_own_task(
    handler_module: ModuleType, task_environment: TaskEnvironment
) -> None:
    summary = handler_module.handler(load_event("put_multiple.json"), None)
    assert len(set(summary["started"].values())) == 3
    for key, task_arn in summary["started"].items():
        assert task_environment(task_arn)["S3_KEY"] == key


@pytest.mark.parametrize(
    ("event_file", "keys"),
    [
        ("special_keys.json", SPECIAL_KEYS),
        ("key_1024_bytes.json", ["uploads/" + "é" * 508]),
        ("moto_unversioned.json", ["uploads/report 1.csv"]),
    ],
)
def test_tasks_get_keys_decoded_exactly(
    handler_module: ModuleType, task_environment: TaskEnvironment, event_file: str, keys: list[str]
) -> None:
    summary = handler_module.handler(load_event(event_file), None)
    assert list(summary["started"]) == keys
    for key, task_arn in summary["started"].items():
        assert task_environment(task_arn)["S3_KEY"] == key


def test_removals_and_results_are_skipped_with_reasons(handler_module: ModuleType) -> None:
    event = s3_event(
        *load_event("removal_and_put.json")["Records"], *load_event("result_key.json")["Records"]
    )
    summary = handler_module.handler(event, None)
    assert list(summary["started"]) == ["uploads/new.csv"]
    assert set(summary["skipped"]) == {"uploads/old.csv", "results/uploads/report.csv.json"}
    assert "RESULT_PREFIX" in summary["skipped"]["results/uploads/report.csv.json"]


def test_the_test_event_is_acknowledged_and_starts_nothing(
    handler_module: ModuleType, moto_ecs: Moto
) -> None:
    ecs, env = moto_ecs
    assert handler_module.handler(load_event("test_event.json"), None) == {
        "started": {},
        "waiting": {},
        "skipped": {},
        "parked": {},
    }
    assert ecs.list_tasks(cluster=env["CLUSTER_ARN"])["taskArns"] == []


@pytest.mark.parametrize(
    "event_file",
    ["malformed_no_records.json", "malformed_record_without_key.json", "malformed_sqs_record.json"],
)
def test_a_malformed_event_raises_value_error(handler_module: ModuleType, event_file: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        handler_module.handler(load_event(event_file), None)


def test_a_malformed_record_does_not_stop_the_good_ones(
    handler_module: ModuleType, moto_ecs: Moto
) -> None:
    ecs, env = moto_ecs
    bad = load_event("malformed_record_without_bucket.json")["Records"][0]
    event = s3_event(s3_record("uploads/a.csv"), bad, s3_record("uploads/b.csv", sequencer="0B"))
    with pytest.raises(MalformedRecordsError, match=r"record 1: s3\.bucket\.name") as raised:
        handler_module.handler(event, None)
    assert isinstance(raised.value, ValueError)
    assert len(ecs.list_tasks(cluster=env["CLUSTER_ARN"])["taskArns"]) == 2
    assert set(raised.value.summary["started"]) == {"uploads/a.csv", "uploads/b.csv"}


def test_a_missing_setting_fails_the_import_naming_it(
    moto_ecs: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = moto_ecs
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CAPACITY_PROVIDER")
    sys.modules.pop("handler", None)
    with pytest.raises(
        ValueError, match="CAPACITY_PROVIDER is missing; set it to FARGATE or FARGATE_SPOT"
    ):
        importlib.import_module("handler")
    sys.modules.pop("handler", None)


def test_a_stopped_task_and_the_sweeps_schedule_reach_their_modules(
    handler_module: ModuleType, moto_ecs: Moto
) -> None:
    ecs, env = moto_ecs
    summary = handler_module.handler(load_event("put_single.json"), None)
    (task_arn,) = summary["started"].values()
    ecs.stop_task(cluster=env["CLUSTER_ARN"], task=task_arn, reason="Task stopped by user")
    (task,) = ecs.describe_tasks(cluster=env["CLUSTER_ARN"], tasks=[task_arn])["tasks"]
    event = {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "detail": json.loads(json.dumps(task, default=str)),
    }
    answer = handler_module.handler(event, FakeContext())
    assert answer["outcome"] == "settled"
    sweep = handler_module.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)
    assert isinstance(sweep, dict)
