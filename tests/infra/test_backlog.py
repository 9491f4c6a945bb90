"""The backlog: a queue the runner parks uploads in and consumes, the cap, and its alarm."""

from __future__ import annotations

import sys
from typing import Any

from infra.monitoring import BACKLOG_DIMENSION, BACKLOG_METRIC_NAMESPACE, BACKLOG_WAIT_METRIC
from infra.runner import BACKLOG_MAX_RECEIVES, TIMEOUT_SECONDS
from jobctl.evaluate import DeclaredResource, Evaluation
from jobctl.runner import TASKRUNNER_DIR
from tests.infra.conftest import as_json

if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

import backlog as runner_backlog
from runner_settings import (
    BACKLOG_VISIBILITY_TIMEOUT_SECONDS,
    MAX_RETRY_BOUNDS,
    MAX_RETRY_SECONDS,
    load_settings,
)

QUEUE = "aws:sqs/queue:Queue"
FUNCTION = "aws:lambda/function:Function"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
TABLE = "aws:dynamodb/table:Table"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def backlog(stack: Evaluation) -> DeclaredResource:
    return stack.named(QUEUE, "-backlog")


def dead_letter_queue(stack: Evaluation) -> DeclaredResource:
    return stack.named(QUEUE, "-runner-dlq")


def cap(stack: Evaluation) -> int:
    return int(stack.config["s3-fargate-jobs:maxConcurrentTasks"])


def runner_statements(stack: Evaluation) -> dict[str, dict[str, Any]]:
    policy = as_json(stack.named(ROLE_POLICY, "-runner-role").inputs["policy"])
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def test_the_backlog_is_encrypted_and_keeps_uploads_14_days(stack: Evaluation) -> None:
    queue = backlog(stack).inputs
    assert queue["sqsManagedSseEnabled"] is True
    assert queue["messageRetentionSeconds"] == 14 * 24 * 3600


def test_the_backlog_hides_a_batch_longer_than_six_function_timeouts(stack: Evaluation) -> None:
    assert backlog(stack).inputs["visibilityTimeoutSeconds"] >= 6 * TIMEOUT_SECONDS
    assert stack.one(FUNCTION).inputs["timeout"] == TIMEOUT_SECONDS


def test_the_backlog_redrives_to_the_dead_letter_queue_after_the_runners_last_try(
    stack: Evaluation,
) -> None:
    redrive = as_json(backlog(stack).inputs["redrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dead_letter_queue(stack).outputs["arn"]
    assert redrive["maxReceiveCount"] == BACKLOG_MAX_RECEIVES == runner_backlog.MAX_RECEIVES


def test_the_longest_deferral_the_runner_accepts_fits_sqs_12_hours_after_the_latest_change(
    stack: Evaluation,
) -> None:
    # A deferral can only succeed while the batch is still hidden; SQS counts 12 h from receipt.
    visibility = backlog(stack).inputs["visibilityTimeoutSeconds"]
    assert visibility == BACKLOG_VISIBILITY_TIMEOUT_SECONDS
    assert MAX_RETRY_BOUNDS[1] + visibility <= 12 * 3600


def test_the_runner_consumes_the_backlog_in_bounded_batches_with_partial_failures(
    stack: Evaluation,
) -> None:
    mapping = stack.one(MAPPING)
    inputs = mapping.inputs
    assert inputs["eventSourceArn"] == backlog(stack).outputs["arn"]
    assert inputs["functionName"] == stack.one(FUNCTION).outputs["arn"]
    assert inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 2 <= inputs["scalingConfig"]["maximumConcurrency"] <= 1000
    # More than 10 messages per batch needs a batching window (Lambda's SQS limits).
    assert inputs["batchSize"] <= 10 or inputs["maximumBatchingWindowInSeconds"] >= 1
    # The mapping checks at creation that the role may read the queue.
    assert stack.named(ROLE_POLICY, "-runner-role").urn in mapping.dependencies


def test_the_runner_environment_names_the_backlog_the_dead_letter_queue_and_the_cap(
    stack: Evaluation,
) -> None:
    env = stack.one(FUNCTION).inputs["environment"]["variables"]
    assert env["BACKLOG_QUEUE_URL"] == backlog(stack).outputs["url"]
    assert env["DEAD_LETTER_QUEUE_URL"] == dead_letter_queue(stack).outputs["url"]
    assert env["MAX_CONCURRENT_TASKS"] == str(cap(stack))
    assert stack.outputs["backlogQueueUrl"] == backlog(stack).outputs["url"]


def test_the_runner_accepts_the_environment_the_program_declares(stack: Evaluation) -> None:
    env = dict(stack.one(FUNCTION).inputs["environment"]["variables"])
    # The awsx VPC's subnet ids are the mock's; everything else is as declared.
    env["SUBNETS"] = "subnet-0a1b2c3d"
    settings = load_settings(env)
    assert settings.max_concurrent_tasks == cap(stack)


def test_with_a_cap_the_runner_gets_a_table_to_take_turns_in_and_may_count_tasks(
    prod: Evaluation,
) -> None:
    assert cap(prod) > 0
    table = prod.one(TABLE)
    assert table.inputs["billingMode"] == "PAY_PER_REQUEST"
    assert table.inputs["hashKey"] == "pk"
    assert table.inputs["ttl"] == {"attributeName": "expiresAt", "enabled": True}
    env = prod.one(FUNCTION).inputs["environment"]["variables"]
    assert env["STATE_TABLE"] == table.outputs["name"]
    statements = runner_statements(prod)
    assert statements["TakeTurnsAndRememberStartedUploads"]["Resource"] == [table.outputs["arn"]]
    count = statements["CountTheJobsTasksForTheCap"]
    assert count["Action"] == ["ecs:ListTasks"]
    cluster = prod.one("aws:ecs/cluster:Cluster").outputs
    assert count["Condition"] == {"ArnEquals": {"ecs:cluster": cluster["arn"]}}
    assert count["Resource"] == ["*"]  # as AWS authorises a cluster-wide ListTasks (test_iam)


def test_without_a_cap_there_is_no_table_and_no_permission_to_count(dev: Evaluation) -> None:
    assert cap(dev) == 0
    assert dev.of_type(TABLE) == []
    assert "STATE_TABLE" not in dev.one(FUNCTION).inputs["environment"]["variables"]
    assert "CountTheJobsTasksForTheCap" not in runner_statements(dev)


def test_the_runner_may_park_defer_and_read_only_the_backlog(stack: Evaluation) -> None:
    statements = runner_statements(stack)
    arn = backlog(stack).outputs["arn"]
    assert statements["ParkAndDeferUploadsInTheBacklog"]["Action"] == [
        "sqs:SendMessage",
        "sqs:ChangeMessageVisibility",
    ]
    assert statements["ParkAndDeferUploadsInTheBacklog"]["Resource"] == [arn]
    assert statements["ReadTheBacklog"]["Resource"] == [arn]


def alarm_queries(alarm: DeclaredResource) -> dict[str, dict[str, Any]]:
    return {query["id"]: query for query in alarm.inputs["metricQueries"]}


def watched(alarm: DeclaredResource) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, metric) -> the metric query, for every metric the alarm reads."""
    return {
        (q["metric"]["namespace"], q["metric"]["metricName"]): q
        for q in alarm_queries(alarm).values()
        if "metric" in q
    }


def test_the_alarm_watches_the_metric_the_runner_writes(stack: Evaluation) -> None:
    alarm = stack.named(ALARM, "-backlog-age")
    runners = (runner_backlog.METRIC_NAMESPACE, runner_backlog.WAIT_METRIC)
    assert runners == (BACKLOG_METRIC_NAMESPACE, BACKLOG_WAIT_METRIC)
    query = watched(alarm)[runners]
    assert list(query["metric"]["dimensions"]) == [runner_backlog.METRIC_DIMENSION]
    assert query["metric"]["dimensions"] == {BACKLOG_DIMENSION: backlog(stack).outputs["name"]}


def test_the_alarm_sees_uploads_wait_while_nothing_consumes_the_backlog(stack: Evaluation) -> None:
    # The runner's metric exists only while the runner runs and defers; with the mapping
    # disabled or the runner failing before it settles, uploads would wait silently. SQS
    # publishes the age of the oldest message whether or not anything receives it.
    alarm = stack.named(ALARM, "-backlog-age")
    query = watched(alarm)[("AWS/SQS", "ApproximateAgeOfOldestMessage")]
    assert query["metric"]["dimensions"] == {"QueueName": backlog(stack).outputs["name"]}
    assert query["metric"]["stat"] == "Maximum"
    assert query["returnData"] is False


def test_the_alarm_fires_on_the_largest_age_any_metric_reports_missing_data_counting_as_none(
    stack: Evaluation,
) -> None:
    alarm = stack.named(ALARM, "-backlog-age")
    queries = alarm_queries(alarm)
    (result,) = [q for q in queries.values() if q.get("returnData")]
    metric_ids = sorted(q for q in queries if "metric" in queries[q])
    # MAX over every source, each filled with 0 where it has no data in a period: a silent
    # runner does not hide what SQS reports, nor SQS's skipping of often-received messages
    # what the runner reports.
    assert result["expression"] == "MAX([" + ", ".join(f"FILL({q}, 0)" for q in metric_ids) + "])"
    for query in queries.values():
        if "metric" in query:
            assert query["metric"]["stat"] == "Maximum"


def test_the_alarm_fires_when_an_upload_waited_longer_than_the_configured_age(
    stack: Evaluation,
) -> None:
    alarm = stack.named(ALARM, "-backlog-age")
    minutes = int(stack.config["s3-fargate-jobs:backlogAgeAlarmMinutes"])
    assert alarm.inputs["threshold"] == minutes * 60
    assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm.inputs["treatMissingData"] == "notBreaching"
    assert alarm.inputs["datapointsToAlarm"] == 1
    # Every waiting upload is seen by the runner within an hour: the alarm looks back that far.
    periods = {q["metric"]["period"] for q in watched(alarm).values()}
    (period,) = periods
    assert period * alarm.inputs["evaluationPeriods"] >= MAX_RETRY_SECONDS
    topic = stack.one("aws:sns/topic:Topic").outputs["arn"]
    assert alarm.inputs["alarmActions"] == [topic]
