"""The backlog: a queue for the uploads the job table could not take, which the runner parks
and consumes; and the alarm on how long anything has waited, there or in the job table."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from infra.runner import BACKLOG_MAX_RECEIVES, TIMEOUT_SECONDS
from jobctl.evaluate import DeclaredResource, Evaluation, evaluate
from tests.infra.conftest import TASKRUNNER_DIR, as_json

if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

import backlog as runner_backlog
import reports
from runner_settings import BACKLOG_VISIBILITY_TIMEOUT_SECONDS, MAX_RETRY_BOUNDS

QUEUE = "aws:sqs/queue:Queue"
FUNCTION = "aws:lambda/function:Function"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
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
    assert stack.outputs["maxConcurrentTasks"] == cap(stack)


def test_the_runner_may_park_defer_and_read_only_the_backlog(stack: Evaluation) -> None:
    statements = runner_statements(stack)
    arn = backlog(stack).outputs["arn"]
    assert statements["ParkAndDeferUploadsInTheBacklog"]["Action"] == [
        "sqs:SendMessage",
        "sqs:ChangeMessageVisibility",
    ]
    assert statements["ParkAndDeferUploadsInTheBacklog"]["Resource"] == [arn]
    assert statements["ReadTheBacklog"]["Resource"] == [arn]


# --- the alarm: the oldest wait, in the backlog queue or in the job table ----------------------


def alarm(stack: Evaluation) -> DeclaredResource:
    return stack.named(ALARM, "-backlog-age")


def alarm_queries(alarm: DeclaredResource) -> dict[str, dict[str, Any]]:
    return {query["id"]: query for query in alarm.inputs["metricQueries"]}


def watched(alarm: DeclaredResource) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, metric) -> the metric query, for every metric the alarm reads."""
    return {
        (q["metric"]["namespace"], q["metric"]["metricName"]): q
        for q in alarm_queries(alarm).values()
        if "metric" in q
    }


def test_the_alarm_watches_the_oldest_wait_the_sweep_writes_for_this_job_table(
    stack: Evaluation,
) -> None:
    query = watched(alarm(stack))[(reports.METRIC_NAMESPACE, "OldestWaitSeconds")]
    table = stack.one("aws:dynamodb/table:Table").outputs["name"]
    assert query["metric"]["dimensions"] == {reports.METRIC_DIMENSION: table}
    assert query["metric"]["stat"] == "Maximum"
    # The metric issue 19's runner wrote under the Backlog dimension is no longer written.
    assert {dims for q in watched(alarm(stack)).values() for dims in q["metric"]["dimensions"]} == {
        reports.METRIC_DIMENSION,
        "QueueName",
    }


def test_the_alarm_sees_uploads_wait_in_the_backlog_queue_while_nothing_consumes_it(
    stack: Evaluation,
) -> None:
    # Uploads the job table could not take wait in the backlog queue; SQS publishes the age of
    # the oldest whether or not anything receives it.
    query = watched(alarm(stack))[("AWS/SQS", "ApproximateAgeOfOldestMessage")]
    assert query["metric"]["dimensions"] == {"QueueName": backlog(stack).outputs["name"]}
    assert query["metric"]["stat"] == "Maximum"
    assert query["returnData"] is False


Series = Mapping[int, float]  # minute -> the metric's datapoint in that minute, if it has one


def alarm_fires(alarm: DeclaredResource, series: Mapping[str, Series], minute: int) -> bool:
    """Whether CloudWatch puts the alarm in ALARM at `minute`, from the datapoints each metric
    query has: the alarm's own expression (MAX of FILLs, as CloudWatch's metric math computes
    it: FILL gives a period without data the value named), then its M-out-of-N rule."""
    inputs = alarm.inputs
    (result,) = [q for q in inputs["metricQueries"] if q.get("returnData")]
    matched = re.fullmatch(r"MAX\(\[(.*)\]\)", result["expression"])
    assert matched, result["expression"]
    fills = re.findall(r"FILL\((\w+), (\d+(?:\.\d+)?)\)", matched[1])
    known = ", ".join(f"FILL({query}, {fill})" for query, fill in fills)
    assert known == matched[1], "an operand this model does not know"
    periods = int(inputs["evaluationPeriods"])  # numbers come through the mocks as floats
    assert {q["metric"]["period"] for q in watched(alarm).values()} == {60}

    def value(at: int) -> float:
        return max(series.get(query, {}).get(at, float(fill)) for query, fill in fills)

    assert inputs["comparisonOperator"] == "GreaterThanThreshold"
    threshold = float(inputs["threshold"])
    breaching = [value(at) > threshold for at in range(minute - periods + 1, minute + 1)]
    return sum(breaching) >= int(inputs["datapointsToAlarm"])


def every_minute(
    values: Mapping[int, float] | None = None, *, until: int = 120
) -> dict[int, float]:
    return {at: (values or {}).get(at, 0.0) for at in range(until)}


def test_the_alarm_fires_within_minutes_when_the_sweep_falls_silent(stack: Evaluation) -> None:
    # The sweep writes its line every minute, also when nothing waits: without it nobody
    # starts the waiting jobs, however young they are.
    sweep = dict.fromkeys(range(60), 30.0)  # jobs waited 30 s; then the sweep stops
    minutes = int(stack.config["s3-fargate-jobs:backlogAgeAlarmMinutes"])
    assert not alarm_fires(alarm(stack), {"jobs": sweep}, 59)
    fired = [at for at in range(60, 120) if alarm_fires(alarm(stack), {"jobs": sweep}, at)]
    assert fired, "never fired"
    assert fired[0] - 59 <= min(3, minutes)
    # And when nothing at all has data, CloudWatch counts the silence as breaching too.
    assert alarm(stack).inputs["treatMissingData"] == "breaching"


def test_one_late_or_missing_sweep_line_raises_no_alarm(stack: Evaluation) -> None:
    # A scheduled rule fires anywhere within its minute, and the line reaches CloudWatch a
    # little later: the minute being evaluated, or one before it, may have none yet.
    sweep = {at: 0.0 for at in range(100) if at not in (40, 99)}
    assert not any(alarm_fires(alarm(stack), {"jobs": sweep}, at) for at in range(3, 100))


def test_the_alarm_fires_when_a_job_has_waited_longer_than_the_configured_age(
    stack: Evaluation,
) -> None:
    minutes = int(stack.config["s3-fargate-jobs:backlogAgeAlarmMinutes"])
    assert alarm(stack).inputs["threshold"] == minutes * 60
    waiting = every_minute({at: at * 60.0 for at in range(minutes + 10)}, until=minutes + 10)
    fired = [at for at in range(minutes + 10) if alarm_fires(alarm(stack), {"jobs": waiting}, at)]
    assert fired, "never fired"
    assert minutes < fired[0] <= minutes + 3  # three minutes above the age in a row
    assert alarm(stack).inputs["alarmActions"] == [stack.one("aws:sns/topic:Topic").outputs["arn"]]
    assert alarm(stack).inputs["okActions"] == alarm(stack).inputs["alarmActions"]


def test_an_upload_parked_in_the_backlog_queue_too_long_raises_it_with_the_sweep_running(
    stack: Evaluation,
) -> None:
    minutes = int(stack.config["s3-fargate-jobs:backlogAgeAlarmMinutes"])
    parked = dict.fromkeys(range(10), (minutes + 1) * 60.0)
    assert alarm_fires(alarm(stack), {"jobs": every_minute(until=10), "queue": parked}, 9)


@pytest.mark.parametrize("minutes", [1, 60, 1440])
def test_with_the_sweep_running_and_nothing_waiting_the_alarm_stays_quiet(minutes: int) -> None:
    stack = evaluate("dev", {"backlogAgeAlarmMinutes": minutes})
    assert not any(alarm_fires(alarm(stack), {"jobs": every_minute()}, at) for at in range(3, 120))
