"""ECS's task-stop events and the sweep's schedule reach the runner, and nothing else does."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from jobctl.evaluate import DeclaredResource, Evaluation
from tests.fakes.aws_model import matches
from tests.infra.conftest import TASKRUNNER_DIR, as_json

if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

from sweep import is_sweep_event
from task_events import is_task_event

RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
PERMISSION = "aws:lambda/permission:Permission"
FUNCTION = "aws:lambda/function:Function"


def rule(stack: Evaluation, suffix: str) -> DeclaredResource:
    return stack.named(RULE, suffix)


def target_of(stack: Evaluation, rule: DeclaredResource) -> DeclaredResource:
    (target,) = [t for t in stack.of_type(TARGET) if t.inputs["rule"] == rule.outputs["name"]]
    return target


def stopped_task_event(stack: Evaluation, **changes: Any) -> dict[str, Any]:
    """An "ECS Task State Change" as EventBridge receives it for a task of this stack's job."""
    family = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs["family"]
    detail = {
        "clusterArn": stack.outputs["clusterArn"],
        "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123abcd",
        "taskDefinitionArn": f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:7",
        "lastStatus": "STOPPED",
        "desiredStatus": "STOPPED",
        "stopCode": "SpotInterruption",
        "version": 4,
        "containers": [{"name": "job", "lastStatus": "STOPPED"}],
        **changes,
    }
    return {
        "version": "0",
        "source": "aws.ecs",
        "account": "123456789012",
        "region": "us-east-1",
        "detail-type": "ECS Task State Change",
        "detail": detail,
    }


def pattern(stack: Evaluation) -> dict[str, Any]:
    found: dict[str, Any] = as_json(rule(stack, "-task-stopped").inputs["eventPattern"])
    return found


@pytest.mark.parametrize(
    "changes",
    [{}, {"stopCode": "EssentialContainerExited"}, {"stopCode": "TaskFailedToStart"}],
    ids=["interrupted", "exited", "failed-to-start"],
)
def test_every_stop_of_a_task_of_this_job_reaches_the_runner_whatever_its_outcome(
    stack: Evaluation, changes: dict[str, Any]
) -> None:
    # A stop frees a slot and ends an attempt: successes too, so the next job starts at once.
    event = stopped_task_event(stack, **changes)
    assert matches(pattern(stack), event)
    assert is_task_event(event)  # the runner takes it for what it is
    target = target_of(stack, rule(stack, "-task-stopped"))
    assert target.inputs["arn"] == stack.one(FUNCTION).outputs["arn"]


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/other"}, "another cluster"),
        (
            {"taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/other:1"},
            "another family",
        ),
        ({"lastStatus": "RUNNING", "desiredStatus": "RUNNING"}, "still running"),
    ],
    ids=["other-cluster", "other-family", "running"],
)
def test_no_other_task_and_no_change_but_a_stop_invokes_the_runner(
    stack: Evaluation, changes: dict[str, Any], why: str
) -> None:
    assert not matches(pattern(stack), stopped_task_event(stack, **changes)), why


def test_a_family_whose_name_extends_the_jobs_is_not_taken_for_it(stack: Evaluation) -> None:
    family = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs["family"]
    longer = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}-nightly:1"
    assert not matches(pattern(stack), stopped_task_event(stack, taskDefinitionArn=longer))


def test_the_sweep_invokes_the_runner_every_minute_with_an_event_it_recognises(
    stack: Evaluation,
) -> None:
    sweep = rule(stack, "-sweep")
    assert sweep.inputs["scheduleExpression"] == "rate(1 minute)"
    assert "eventPattern" not in sweep.inputs
    assert target_of(stack, sweep).inputs["arn"] == stack.one(FUNCTION).outputs["arn"]
    # What a scheduled rule delivers (EventBridge user guide, "Creating a rule that runs on a
    # schedule"), without an input transformer.
    scheduled = {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-28T12:00:00Z",
        "region": "us-east-1",
        "resources": [sweep.outputs["arn"]],
        "detail": {},
    }
    assert not {"input", "inputPath", "inputTransformer"} & set(target_of(stack, sweep).inputs)
    assert is_sweep_event(scheduled)
    assert not is_task_event(scheduled)


def test_each_rule_alone_may_invoke_the_runner_for_eventbridge(stack: Evaluation) -> None:
    function = stack.one(FUNCTION).outputs["name"]
    from_eventbridge = [
        p for p in stack.of_type(PERMISSION) if p.inputs["principal"] == "events.amazonaws.com"
    ]
    assert sorted(p.inputs["sourceArn"] for p in from_eventbridge) == sorted(
        r.outputs["arn"] for r in stack.of_type(RULE)
    )
    for permission in from_eventbridge:
        assert permission.inputs["action"] == "lambda:InvokeFunction"
        assert permission.inputs["function"] == function
    # A target invoking before its permission exists fails, and waits for a retry.
    by_rule = {p.inputs["sourceArn"]: p for p in from_eventbridge}
    for each in stack.of_type(RULE):
        assert by_rule[each.outputs["arn"]].urn in target_of(stack, each).dependencies


def test_a_stop_is_retried_for_a_day_and_then_kept_rather_than_dropped(stack: Evaluation) -> None:
    # Without a dead-letter queue EventBridge drops what it could not deliver, silently.
    target = target_of(stack, rule(stack, "-task-stopped")).inputs
    assert target["retryPolicy"] == {"maximumEventAgeInSeconds": 86400, "maximumRetryAttempts": 185}
    undeliverable = stack.named("aws:sqs/queue:Queue", "-undeliverable").outputs["arn"]
    assert target["deadLetterConfig"] == {"arn": undeliverable}


def test_a_sweep_is_not_delivered_later_than_the_next_one_is_due(stack: Evaluation) -> None:
    target = target_of(stack, rule(stack, "-sweep")).inputs
    assert target["retryPolicy"]["maximumEventAgeInSeconds"] == 60  # EventBridge's least


def test_the_rules_belong_to_one_scheduling_component_of_the_system(stack: Evaluation) -> None:
    (scheduling,) = stack.of_type("s3fargatejobs:index:JobScheduling")
    for resource in [*stack.of_type(RULE), *stack.of_type(TARGET)]:
        assert resource.parent == scheduling.urn, resource.name
