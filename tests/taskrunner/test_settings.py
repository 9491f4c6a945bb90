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


@pytest.mark.parametrize("name", sorted(RUNNER_ENV))
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
