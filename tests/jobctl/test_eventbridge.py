"""The demo plays EventBridge with the program's own rules: a task's stop reaches the runner only
if a rule the program declares for it matches the event."""

from __future__ import annotations

import pytest

from jobctl.evaluate import evaluate
from jobctl.eventbridge import Rules, matches, runner_rules
from jobctl.fargate import EXITED_REASON, stopped_event

CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/s3-fargate-jobs-dev-cluster-30c531f"
FAMILY = "arn:aws:ecs:us-east-1:123456789012:task-definition/s3-fargate-jobs-dev-job"


def stop_of(cluster: str = CLUSTER, task_definition: str = f"{FAMILY}:1") -> dict[str, object]:
    """A stop as the demo builds it from DescribeTasks."""
    described = {
        "taskArn": f"{cluster.replace(':cluster/', ':task/')}/0f1e",
        "clusterArn": cluster,
        "taskDefinitionArn": task_definition,
        "lastStatus": "RUNNING",
        "containers": [{"name": "job", "lastStatus": "RUNNING"}],
    }
    return stopped_event(
        described,
        container="job",
        exit_code=0,
        stop_code="EssentialContainerExited",
        reason=EXITED_REASON,
        started_at=1000.0,
        stopped_at=1001.0,
    )


def test_the_program_declares_a_stop_rule_and_the_sweeps_schedule_for_the_runner() -> None:
    rules = runner_rules(evaluate("dev"))
    assert len(rules.patterns) == 1
    assert rules.schedule == "rate(1 minute)"
    assert rules.schedule_arn is not None
    assert rules.schedule_arn.startswith("arn:aws:events:us-east-1:123456789012:rule/")


def test_the_stop_rule_matches_the_stop_of_a_task_of_the_job() -> None:
    assert runner_rules(evaluate("dev")).deliver(stop_of())


@pytest.mark.parametrize(
    "stop",
    [
        stop_of(cluster=CLUSTER.replace("cluster-30c531f", "other")),
        stop_of(task_definition="arn:aws:ecs:us-east-1:123456789012:task-definition/other:1"),
    ],
    ids=["another-cluster", "another-family"],
)
def test_the_stop_rule_does_not_match_another_clusters_or_familys_tasks(
    stop: dict[str, object],
) -> None:
    assert not runner_rules(evaluate("dev")).deliver(stop)


def test_a_program_without_rules_for_the_runner_gets_every_stop() -> None:
    assert Rules().deliver(stop_of(cluster="arn:aws:ecs:us-east-1:1:cluster/anything"))


@pytest.mark.parametrize(
    ("pattern", "event", "matched"),
    [
        ({"a": ["x", "y"]}, {"a": "y"}, True),
        ({"a": ["x"]}, {"a": "z"}, False),
        ({"a": [{"prefix": "ab"}]}, {"a": "abc"}, True),
        ({"a": [{"anything-but": "ok"}]}, {"a": "bad"}, True),
        ({"a": [{"anything-but": ["ok"]}]}, {"a": "ok"}, False),
        ({"a": [{"exists": False}]}, {}, True),
        ({"d": {"c": {"code": [0]}}}, {"d": {"c": [{"code": 1}, {"code": 0}]}}, True),
        ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
        ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "n"}, False),
        ({"d": {"a": ["x"]}}, {}, False),
    ],
)
def test_patterns_match_as_eventbridge_matches_them(
    pattern: dict[str, object], event: dict[str, object], matched: bool
) -> None:
    assert matches(pattern, event) is matched
