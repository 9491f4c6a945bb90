"""The runner's settings: every variable validated, every problem named with what is allowed."""

from __future__ import annotations

import pytest
from runner_settings import SettingsError, load_settings

from tests.taskrunner.conftest import RUNNER_ENV


def test_valid_environment_gives_typed_settings() -> None:
    settings = load_settings(RUNNER_ENV)
    assert settings.subnets == ("subnet-0a1b2c3d", "subnet-4e5f6a7b")
    assert settings.security_groups == ("sg-0123abcd",)
    assert settings.capacity_provider == "FARGATE_SPOT"
    assert settings.assign_public_ip == "DISABLED"
    assert settings.result_prefix == "results/"


def test_list_variables_tolerate_spaces_and_empty_items() -> None:
    settings = load_settings({**RUNNER_ENV, "SUBNETS": " subnet-0a1b2c3d , ,subnet-4e5f6a7b "})
    assert settings.subnets == ("subnet-0a1b2c3d", "subnet-4e5f6a7b")


OPTIONAL = {"JOB_LOG_GROUP"}  # without it, reports name no log group


@pytest.mark.parametrize("name", sorted(set(RUNNER_ENV) - OPTIONAL))
def test_a_missing_variable_is_named_in_the_error(name: str) -> None:
    env = {key: value for key, value in RUNNER_ENV.items() if key != name}
    with pytest.raises(SettingsError, match=f"{name} is missing"):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("CLUSTER_ARN", "jobs", "cluster ARN"),
        ("TASK_DEFINITION_ARN", "job:1", "task definition ARN"),
        ("CONTAINER_NAME", "job container", "letters, digits"),
        ("SUBNETS", "subnet-0a1b,vpc-1234", "subnet ids"),
        ("SUBNETS", ",".join(f"subnet-{n:04x}" for n in range(17)), "1 to 16"),
        ("SECURITY_GROUPS", "default", "security group ids"),
        ("ASSIGN_PUBLIC_IP", "yes", "ENABLED or DISABLED"),
        ("CAPACITY_PROVIDER", "EC2", "FARGATE or FARGATE_SPOT"),
    ],
)
def test_an_invalid_value_is_named_with_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**RUNNER_ENV, name: value})
    assert f"{name}={value!r} is invalid" in str(raised.value)
    assert allowed in str(raised.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**RUNNER_ENV, "CAPACITY_PROVIDER": "EC2", "SUBNETS": ""})
    assert "CAPACITY_PROVIDER" in str(raised.value)
    assert "SUBNETS is missing" in str(raised.value)


def test_settings_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="RESULT_PREFIX"):
        load_settings({**RUNNER_ENV, "RESULT_PREFIX": ""})


@pytest.mark.parametrize("seconds", ["43200", "42481"])
def test_a_longest_retry_sqs_would_refuse_to_set_is_named_with_why(seconds: str) -> None:
    # SQS hides a received message at most 12 h from its receipt, minus what has passed since:
    # ChangeMessageVisibility for 43,200 s always fails, and so would every deferral.
    with pytest.raises(SettingsError) as raised:
        load_settings({**RUNNER_ENV, "BACKLOG_MAX_RETRY_SECONDS": seconds})
    assert f"BACKLOG_MAX_RETRY_SECONDS={seconds!r} is invalid" in str(raised.value)
    assert "from 1 to 42480" in str(raised.value)
    assert "12 h from its receipt" in str(raised.value)


def test_the_longest_retry_may_come_as_close_to_12_hours_as_a_late_change_allows() -> None:
    settings = load_settings({**RUNNER_ENV, "BACKLOG_MAX_RETRY_SECONDS": "42480"})
    assert settings.max_retry_seconds == 42_480


def test_the_retry_and_timeout_settings_default_to_the_documented_values() -> None:
    settings = load_settings(RUNNER_ENV)
    assert settings.retry.max_attempts == 3
    assert settings.retry.retry_exit_codes == frozenset()
    assert not settings.retry.retry_timeouts
    assert not settings.retry.spot_fallback
    assert settings.task_timeout_seconds is None
    assert settings.wait_timeout_seconds == 14 * 24 * 3600
    assert settings.record_days == 30
    assert settings.retry.first_delay == 30


def test_the_retry_settings_are_read_as_the_infrastructure_writes_them() -> None:
    settings = load_settings(
        {
            **RUNNER_ENV,
            "TASK_MAX_ATTEMPTS": "5",
            "TASK_RETRY_EXIT_CODES": "75, 3",
            "TASK_RETRY_TIMEOUTS": "true",
            "SPOT_FALLBACK_TO_FARGATE": "true",
            "TASK_TIMEOUT_SECONDS": "900",
            "WAIT_TIMEOUT_SECONDS": "3600",
            "JOB_RECORD_DAYS": "7",
            "TASK_RETRY_DELAY_SECONDS": "5",
        }
    )
    assert (settings.retry.max_attempts, settings.retry.retry_exit_codes) == (5, frozenset({3, 75}))
    assert settings.retry.retry_timeouts
    assert settings.retry.spot_fallback
    assert (settings.task_timeout_seconds, settings.wait_timeout_seconds) == (900, 3600)
    assert settings.record_days == 7
    assert settings.retry.first_delay == 5


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("TASK_MAX_ATTEMPTS", "11", "from 1 to 10"),
        ("TASK_MAX_ATTEMPTS", "0", "from 1 to 10"),
        ("TASK_RETRY_EXIT_CODES", "1,256", "exit codes from 1 to 255"),
        ("TASK_RETRY_EXIT_CODES", "one", "exit codes from 1 to 255"),
        ("TASK_RETRY_TIMEOUTS", "yes", "true or false"),
        ("WAIT_TIMEOUT_SECONDS", "60", "from 600 to 1209600"),
        ("JOB_RECORD_DAYS", "0", "from 1 to 3650"),
        ("TASK_RETRY_DELAY_SECONDS", "0", "from 1 to 600"),
        ("STATE_TABLE", "x", "DynamoDB table"),
        ("FAILED_JOBS_QUEUE_URL", "queue", "failed-jobs queue's URL"),
    ],
)
def test_a_bad_retry_or_job_setting_is_named_with_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**RUNNER_ENV, name: value})
    assert f"{name}={value!r} is invalid" in str(raised.value)
    assert allowed in str(raised.value)
