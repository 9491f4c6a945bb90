"""Failed jobs reach a queue a person reads, and alarms say when work is waiting."""

from __future__ import annotations

from typing import Any

import pytest

from jobctl.evaluate import Evaluation, evaluate
from tests.infra.conftest import as_json
from tests.infra.test_config import error_for

QUEUE = "aws:sqs/queue:Queue"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"


def test_failed_jobs_reach_the_encrypted_failed_jobs_queue_from_the_runner_alone(
    stack: Evaluation,
) -> None:
    # The runner sends a job that failed for good, once, with its attempts; a rule sending
    # every failed task there would report each retried attempt as a failure.
    failed = stack.named(QUEUE, "-failed-jobs")
    assert failed.inputs["sqsManagedSseEnabled"] is True
    assert failed.inputs["messageRetentionSeconds"] == 14 * 24 * 3600
    assert stack.outputs["failedJobsQueueUrl"] == failed.outputs["url"]
    env = stack.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    assert env["FAILED_JOBS_QUEUE_URL"] == failed.outputs["url"]
    assert [t.name for t in stack.of_type(TARGET) if t.inputs["arn"] == failed.outputs["arn"]] == []
    assert [
        p.name for p in stack.of_type(QUEUE_POLICY) if p.inputs["queueUrl"] == failed.outputs["url"]
    ] == []


def test_only_the_jobs_rules_may_put_undelivered_events_in_the_undeliverable_queue(
    stack: Evaluation,
) -> None:
    undeliverable = stack.named(QUEUE, "-undeliverable")
    assert undeliverable.inputs["sqsManagedSseEnabled"] is True
    (policy,) = stack.of_type(QUEUE_POLICY)
    assert policy.inputs["queueUrl"] == undeliverable.outputs["url"]
    (statement,) = as_json(policy.inputs["policy"])["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == undeliverable.outputs["arn"]
    rules = sorted(rule.outputs["arn"] for rule in stack.of_type(RULE))
    assert len(rules) == 2
    assert sorted(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == rules
    # And every rule's target keeps what it could not deliver there.
    for target in stack.of_type(TARGET):
        assert target.inputs["deadLetterConfig"]["arn"] == undeliverable.outputs["arn"]


def alarm_metrics(alarm: Any) -> dict[str, dict[str, Any]]:
    return {q["id"]: q for q in alarm.inputs["metricQueries"]}


def test_an_alarm_fires_when_the_dead_letter_failed_jobs_or_undeliverable_queue_holds_messages(
    stack: Evaluation,
) -> None:
    alarm = stack.named(ALARM, "-work-waiting")
    metrics = alarm_metrics(alarm)
    watched = {q["metric"]["dimensions"]["QueueName"] for q in metrics.values() if "metric" in q}
    assert watched == {
        stack.named(QUEUE, suffix).outputs["name"]
        for suffix in ("-runner-dlq", "-failed-jobs", "-undeliverable")
    }
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
