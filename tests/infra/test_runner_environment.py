"""The runner's environment: every variable its settings read, as the stack's config says.

The runner validates its environment when its container starts and refuses to run on a missing
or invalid variable, so a gap here fails every upload: these tests run the runner's own
`load_settings` on the environment the program declares.
"""

from __future__ import annotations

import ast
import re
import sys
from typing import Any

import pytest

from jobctl.evaluate import Evaluation, evaluate
from tests.infra.conftest import TASKRUNNER_DIR, as_json

if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

import reports
from job_record import Attempt
from runner_settings import RunnerSettings, SettingsError, load_settings

# Variables the program leaves to the runner's defaults on purpose: the backlog's and a task
# retry's pacing (the demo shortens them), and the exit codes to retry when none are listed.
LEFT_TO_THE_RUNNERS_DEFAULT = {
    "BACKLOG_FIRST_RETRY_SECONDS",
    "BACKLOG_MAX_RETRY_SECONDS",
    "TASK_RETRY_DELAY_SECONDS",
    "TASK_RETRY_EXIT_CODES",
}


def declared_environment(stack: Evaluation) -> dict[str, str]:
    env: dict[str, str] = stack.one("aws:lambda/function:Function").inputs["environment"][
        "variables"
    ]
    return dict(env)


def settings_of(stack: Evaluation) -> RunnerSettings:
    return load_settings(declared_environment(stack))


def config(stack: Evaluation, key: str) -> str:
    return stack.config[f"s3-fargate-jobs:{key}"]


def variables_the_runner_reads() -> set[str]:
    """Every environment variable runner_settings.py names: the first argument of a call."""
    source = (TASKRUNNER_DIR / "runner_settings.py").read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            for argument in node.args[:2]:  # matching("X", ...), _flag(environ, "X", ...)
                if (
                    isinstance(argument, ast.Constant)
                    and isinstance(argument.value, str)
                    and re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", argument.value)
                ):
                    names.add(argument.value)
    return names


def test_every_variable_the_runner_requires_is_declared(stack: Evaluation) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({})
    required = set(re.findall(r"([A-Z][A-Z0-9_]+) is missing", str(raised.value)))
    assert {"CLUSTER_ARN", "STATE_TABLE", "FAILED_JOBS_QUEUE_URL"} <= required
    assert required - set(declared_environment(stack)) == set()


def test_every_variable_the_runner_reads_is_declared_or_left_to_its_default_on_purpose(
    stack: Evaluation,
) -> None:
    read = variables_the_runner_reads()
    assert {"TASK_TIMEOUT_SECONDS", "WAIT_TIMEOUT_SECONDS", "JOB_LOG_GROUP"} <= read
    undeclared = read - set(declared_environment(stack)) - LEFT_TO_THE_RUNNERS_DEFAULT
    assert undeclared == set()
    # And nothing is declared that the runner would not read.
    assert set(declared_environment(stack)) - read == set()


def test_the_runner_starts_with_the_environment_each_stack_declares(stack: Evaluation) -> None:
    settings = settings_of(stack)
    assert settings.cluster_arn == stack.outputs["clusterArn"]
    assert settings.state_table == stack.outputs["jobTableName"]
    assert settings.failed_jobs_queue_url == stack.outputs["failedJobsQueueUrl"]
    assert settings.dead_letter_queue_url == stack.outputs["deadLetterQueueUrl"]
    assert settings.backlog_queue_url == stack.outputs["backlogQueueUrl"]
    assert settings.max_concurrent_tasks == int(config(stack, "maxConcurrentTasks"))
    # The log commands the runner prints name the job's log group.
    assert settings.job_log_group == stack.outputs["logGroupName"]


def test_the_task_time_limit_reaches_the_runner_that_enforces_it(stack: Evaluation) -> None:
    minutes = int(config(stack, "taskTimeoutMinutes"))
    assert minutes > 0
    assert settings_of(stack).task_timeout_seconds == minutes * 60


def test_without_a_task_time_limit_the_runner_stops_no_task() -> None:
    assert settings_of(evaluate("dev", {"taskTimeoutMinutes": 0})).task_timeout_seconds is None


def test_the_defaults_give_three_attempts_no_exit_code_retried_and_14_days_of_waiting(
    dev: Evaluation,
) -> None:
    settings = settings_of(dev)
    assert settings.retry.max_attempts == 3
    assert settings.retry.retry_exit_codes == frozenset()
    assert settings.retry.retry_timeouts is False
    assert settings.retry.spot_fallback is False
    assert settings.wait_timeout_seconds == 14 * 24 * 3600
    assert settings.record_days == int(config(dev, "jobRecordDays"))


@pytest.mark.parametrize("provider", ["FARGATE", "FARGATE_SPOT"])
def test_the_retry_rules_reach_the_runner_as_configured(provider: str) -> None:
    overrides: dict[str, Any] = {
        "capacityProvider": provider,
        "taskMaxAttempts": 5,
        "taskRetryExitCodes": [75, 3],
        "taskRetryTimeouts": True,
        "spotFallbackToOnDemand": True,
        "waitTimeoutMinutes": 600,
        "jobRecordDays": 90,
    }
    stack = evaluate("dev", overrides)
    assert declared_environment(stack)["TASK_RETRY_EXIT_CODES"] == "3,75"
    settings = settings_of(stack)
    assert settings.capacity_provider == provider
    assert settings.retry.max_attempts == 5
    assert settings.retry.retry_exit_codes == frozenset({3, 75})
    assert settings.retry.retry_timeouts is True
    assert settings.retry.spot_fallback is True
    assert settings.wait_timeout_seconds == 600 * 60
    assert settings.record_days == 90


def test_the_job_is_told_its_job_and_attempt_by_the_runner_never_by_the_task_definition(
    stack: Evaluation,
) -> None:
    # The runner sets JOB_ID, JOB_ATTEMPT and JOB_CLAIM per RunTask; a task definition value
    # would be overridden at best, and stack config may not set them (test_job_contents).
    task = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    (container,) = as_json(task["containerDefinitions"])
    assert not {"JOB_ID", "JOB_ATTEMPT", "JOB_CLAIM"} & {
        e["name"] for e in container["environment"]
    }


def test_the_log_stream_the_runner_reports_is_the_one_the_task_writes(stack: Evaluation) -> None:
    # awslogs names a task's stream <prefix>/<container>/<task id>: the failed-jobs message and
    # `jobctl show` print it for reading the attempt's logs.
    task = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    (container,) = as_json(task["containerDefinitions"])
    options = container["logConfiguration"]["options"]
    settings = settings_of(stack)
    arn = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123abcd"
    attempt = Attempt(number=1, claim=1, provider="FARGATE", claimed_at=0.0, task_arn=arn)
    assert reports.log_stream(attempt, settings.container_name) == (
        f"{options['awslogs-stream-prefix']}/{container['name']}/0123abcd"
    )
    assert settings.job_log_group == options["awslogs-group"]
