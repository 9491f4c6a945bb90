"""Failed jobs reach a queue a person reads, and alarms say when work is waiting."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from moto.events.models import EventPattern

from infra.monitoring import FAILED_JOB_PATHS, failed_task_pattern
from jobctl.evaluate import Evaluation, evaluate
from jobctl.redrive import plan
from tests.infra.conftest import as_json
from tests.infra.test_config import error_for

QUEUE = "aws:sqs/queue:Queue"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"

FAMILY_PREFIX = "arn:aws:ecs:us-east-1:123456789012:task-definition/jobs-dev-job:"


def stop_event(stop_code: str, exit_code: int | None, family: str = "jobs-dev-job") -> Any:
    container: dict[str, Any] = {} if exit_code is None else {"exitCode": exit_code}
    return {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "detail": {
            "clusterArn": "arn:cluster",
            "lastStatus": "STOPPED",
            "taskDefinitionArn": f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:7",
            "stopCode": stop_code,
            "containers": [container],
        },
    }


@pytest.mark.parametrize(
    ("stop_code", "exit_code", "reported"),
    [
        ("TaskFailedToStart", None, True),  # e.g. the image could not be pulled
        ("SpotInterruption", None, True),
        ("UserInitiated", 143, True),  # StopTask
        ("EssentialContainerExited", 0, False),  # success is not news
    ],
)
def test_the_rule_reports_stops_for_any_reason_but_success(
    stop_code: str, exit_code: int | None, reported: bool
) -> None:
    pattern = EventPattern.load(failed_task_pattern("arn:cluster", FAMILY_PREFIX))
    assert pattern.matches_event(stop_event(stop_code, exit_code)) is reported


def test_the_rule_ignores_other_families_and_clusters() -> None:
    pattern = EventPattern.load(failed_task_pattern("arn:cluster", FAMILY_PREFIX))
    assert not pattern.matches_event(stop_event("TaskFailedToStart", None, family="other-job"))
    elsewhere = stop_event("TaskFailedToStart", None)
    elsewhere["detail"]["clusterArn"] = "arn:another-cluster"
    assert not pattern.matches_event(elsewhere)


def test_the_rule_reports_a_non_zero_exit_of_the_essential_container() -> None:
    # moto's matcher does not descend into arrays of objects (EventBridge does), so the
    # exit-code branch is checked by its shape.
    detail = json.loads(failed_task_pattern("arn:cluster", FAMILY_PREFIX))["detail"]
    assert {"containers": {"exitCode": [{"anything-but": 0}]}} in detail["$or"]


def test_failed_tasks_of_this_cluster_go_to_the_encrypted_failed_jobs_queue(
    stack: Evaluation,
) -> None:
    rule = stack.one(RULE)
    pattern = as_json(rule.inputs["eventPattern"])
    assert pattern["detail"]["clusterArn"] == [stack.outputs["clusterArn"]]
    family = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs["family"]
    assert pattern["detail"]["taskDefinitionArn"][0]["prefix"].endswith(f"/{family}:")

    target = stack.one(TARGET).inputs
    failed = stack.named(QUEUE, "-failed-jobs")
    undeliverable = stack.named(QUEUE, "-undeliverable")
    assert target["rule"] == rule.outputs["name"]
    assert target["arn"] == failed.outputs["arn"]
    assert target["deadLetterConfig"]["arn"] == undeliverable.outputs["arn"]
    assert stack.outputs["failedJobsQueueUrl"] == failed.outputs["url"]
    for queue in (failed, undeliverable):
        assert queue.inputs["sqsManagedSseEnabled"] is True


def test_the_failed_job_message_names_the_upload_reason_exit_code_task_and_log_stream(
    stack: Evaluation,
) -> None:
    transformer = stack.one(TARGET).inputs["inputTransformer"]
    assert transformer["inputPaths"] == FAILED_JOB_PATHS
    template = transformer["inputTemplate"]
    for placeholder in ("<taskArn>", "<stoppedReason>", "<exitCode>", "<environment>"):
        assert placeholder in template
    # Every <...> in the template is an input path EventBridge can fill, or it rejects the target.
    assert set(re.findall(r"<([^<>]*)>", template)) == set(FAILED_JOB_PATHS)
    message = json.loads(eventbridge_transform(template, FAILED_JOB_PATHS, ecs_stop_event()))
    assert message["logGroup"] == stack.outputs["logGroupName"]
    assert message["logStream"].startswith("job/job/")
    assert f"--stack {stack.stack}" in message["replay"]


def _resolve(event: Any, path: str) -> Any:
    """A JSON path of the form EventBridge's input paths use here: $.a.b[0].c."""
    value = event
    for name, index in re.findall(r"\.([\w-]+)(?:\[(\d+)\])?", path):
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
        if index:
            if not isinstance(value, list) or int(index) >= len(value):
                return None
            value = value[int(index)]
    return value


def eventbridge_transform(template: str, paths: dict[str, str], event: Any) -> str:
    """The input transformer as the EventBridge user guide documents it for a placeholder that
    is a whole JSON value: the value's JSON, a string quoted and escaped; a path the event lacks
    gives "" (AWS-validated in localstack's input transformer tests). Inside a string EventBridge
    pastes values unescaped; the template has no such placeholder (see the test below)."""

    def value(match: re.Match[str]) -> str:
        found = _resolve(event, paths[match[1]])
        return json.dumps("" if found is None else found)

    return re.sub(r"<([^<>]*)>", value, template)


# Real ECS stop reasons quote URLs, e.g. when a task in a subnet without a route cannot pull.
PULL_FAILURE = (
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource "
    "retrieval failed: unable to retrieve ecr registry auth: service call has been retried 3 "
    'time(s): RequestError: send request failed caused by: Post "https://api.ecr.us-east-1.'
    'amazonaws.com/": dial tcp 10.0.0.1:443: i/o timeout \\ (backslash)'
)


def ecs_stop_event(
    stopped_reason: str = "Essential container in task exited",
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An "ECS Task State Change" event of a task the runner started, as EventBridge sees it."""
    return {
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "detail": {
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/0123abcd",
            "lastStatus": "STOPPED",
            "stopCode": "EssentialContainerExited",
            "stoppedReason": stopped_reason,
            "stoppedAt": "2026-11-28T12:00:00.000Z",
            "containers": [container if container is not None else {"exitCode": 6}],
            "overrides": {
                "containerOverrides": [
                    {
                        "name": "job",
                        "environment": [
                            {"name": "S3_BUCKET", "value": "uploads-bucket"},
                            {"name": "S3_KEY", "value": 'uploads/a "quoted" name.csv'},
                        ],
                    }
                ]
            },
        },
    }


def test_no_placeholder_sits_inside_a_json_string_where_eventbridge_would_not_escape_it(
    dev: Evaluation,
) -> None:
    template = dev.one(TARGET).inputs["inputTransformer"]["inputTemplate"]
    # A placeholder standing as a whole value parses when replaced by a JSON object; one
    # inside a string would break the string.
    marked = re.sub(r"<([^<>]*)>", lambda m: json.dumps({"placeholder": m[1]}), template)
    values = json.loads(marked).values()
    assert {v["placeholder"] for v in values if isinstance(v, dict)} == set(FAILED_JOB_PATHS)


@pytest.mark.parametrize(
    ("event", "exit_code", "reason"),
    [
        (ecs_stop_event(PULL_FAILURE, {}), "none", PULL_FAILURE),
        (ecs_stop_event(container={"exitCode": 6, "reason": 'x "y"'}), "6", "Essential"),
    ],
    ids=["image-pull-failure-without-exit-code", "exit-code-6"],
)
def test_a_failed_job_message_is_json_the_redrive_reads_whatever_the_stop_reason_holds(
    dev: Evaluation, event: dict[str, Any], exit_code: str, reason: str
) -> None:
    transformer = dev.one(TARGET).inputs["inputTransformer"]
    body = eventbridge_transform(transformer["inputTemplate"], transformer["inputPaths"], event)
    replay = plan("failed-jobs", {"MessageId": "m", "ReceiptHandle": "r", "Body": body})
    assert replay.keys == ('uploads/a "quoted" name.csv',)
    assert f"(exit code {exit_code})" in replay.reason
    assert reason in replay.reason
    assert replay.log_stream == "job/job/0123abcd"


def test_only_the_rule_may_send_to_the_failed_jobs_queues(stack: Evaluation) -> None:
    rule_arn = stack.one(RULE).outputs["arn"]
    policies = stack.of_type("aws:sqs/queuePolicy:QueuePolicy")
    assert len(policies) == 2
    for policy in policies:
        (statement,) = as_json(policy.inputs["policy"])["Statement"]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}}


def alarm_metrics(alarm: Any) -> dict[str, dict[str, Any]]:
    return {q["id"]: q for q in alarm.inputs["metricQueries"]}


def test_an_alarm_fires_when_the_dead_letter_or_failed_jobs_queue_holds_messages(
    stack: Evaluation,
) -> None:
    alarm = stack.named(ALARM, "-work-waiting")
    metrics = alarm_metrics(alarm)
    watched = {q["metric"]["dimensions"]["QueueName"] for q in metrics.values() if "metric" in q}
    assert stack.named(QUEUE, "-runner-dlq").outputs["name"] in watched
    assert stack.named(QUEUE, "-failed-jobs").outputs["name"] in watched
    assert alarm.inputs["threshold"] == 0
    assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm.inputs["alarmActions"] == [stack.outputs["alertTopicArn"]]


def test_an_alarm_fires_when_the_runner_fails_is_throttled_or_loses_an_event(
    stack: Evaluation,
) -> None:
    alarm = stack.named(ALARM, "-runner-failing")
    metrics = alarm_metrics(alarm)
    function = stack.one("aws:lambda/function:Function").outputs["name"]
    assert {q["metric"]["metricName"] for q in metrics.values() if "metric" in q} == {
        "Errors",
        "Throttles",
        "DestinationDeliveryFailures",  # an on-failure record that never reached the queue
    }
    (total,) = [q for q in metrics.values() if "expression" in q]
    assert set(total["expression"].split(" + ")) == {q for q in metrics if q != total["id"]}
    for query in metrics.values():
        if "metric" in query:
            assert query["metric"]["dimensions"] == {"FunctionName": function}
    assert alarm.inputs["alarmActions"] == [stack.outputs["alertTopicArn"]]


def test_the_alert_topic_is_encrypted_with_a_key_cloudwatch_may_use(stack: Evaluation) -> None:
    topic = stack.one("aws:sns/topic:Topic").inputs
    key = stack.one("aws:kms/key:Key")
    assert topic["kmsMasterKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    statements = as_json(key.inputs["policy"])["Statement"]
    services = [s["Principal"].get("Service") for s in statements]
    assert "cloudwatch.amazonaws.com" in services


def test_alert_email_subscribes_an_address_only_when_set(dev: Evaluation) -> None:
    assert not dev.of_type("aws:sns/topicSubscription:TopicSubscription")
    stack = evaluate("dev", {"alertEmail": "oncall@example.com"})
    subscription = stack.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert subscription["protocol"] == "email"
    assert subscription["endpoint"] == "oncall@example.com"


def test_the_task_timeout_reaches_the_job_in_seconds(dev: Evaluation) -> None:
    (container,) = as_json(
        dev.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    env = {e["name"]: e["value"] for e in container["environment"]}
    minutes = int(dev.config["s3-fargate-jobs:taskTimeoutMinutes"])
    assert env["TASK_TIMEOUT_SECONDS"] == str(minutes * 60)


def test_no_task_timeout_means_no_limit_is_passed() -> None:
    stack = evaluate("dev", {"taskTimeoutMinutes": 0})
    (container,) = as_json(
        stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    assert "TASK_TIMEOUT_SECONDS" not in {e["name"] for e in container["environment"]}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"alertEmail": "not an email"}, "expected one email address"),
        ({"taskTimeoutMinutes": "-5"}, "between 1 and 43200"),
        ({"taskTimeoutMinutes": "50000"}, "between 1 and 43200"),
    ],
)
def test_bad_monitoring_settings_are_rejected(overrides: dict[str, str], expected: str) -> None:
    assert expected in error_for(**overrides)
