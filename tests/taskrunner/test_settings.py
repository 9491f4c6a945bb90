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
