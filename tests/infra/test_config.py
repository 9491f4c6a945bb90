"""Bad configuration stops the program before anything is declared, with one clear message."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import yaml

from infra.config import (
    CONFIG_KEYS,
    FARGATE_MEMORY_BY_CPU,
    JOB_RECORD_DAYS,
    TASK_MAX_ATTEMPTS,
    TASK_TIMEOUT_MINUTES,
    WAIT_TIMEOUT_MINUTES,
    ConfigError,
    Settings,
    parse_settings,
)
from jobctl.evaluate import PROJECT_DIR, ProgramError, committed_stacks, evaluate, stack_config
from tests.infra.conftest import TASKRUNNER_DIR

if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

from runner_settings import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RECORD_DAYS,
    DEFAULT_WAIT_TIMEOUT_SECONDS,
    MAX_ATTEMPTS_BOUNDS,
    RECORD_DAYS_BOUNDS,
    TASK_TIMEOUT_BOUNDS,
    WAIT_TIMEOUT_BOUNDS,
)


def raw_config(**overrides: Any) -> dict[str, object]:
    values: dict[str, object] = {
        key.split(":", 1)[1]: value for key, value in stack_config("dev").items()
    }
    values.update(overrides)
    return values


def parse(**overrides: Any) -> Settings:
    return parse_settings(raw_config(**overrides), project="s3-fargate-jobs", stack="test")


def error_for(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(**overrides)
    return str(caught.value)


def test_the_dev_config_parses_into_settings() -> None:
    settings = parse()
    assert settings.network_mode == "public"
    assert (settings.task_cpu, settings.task_memory) == (256, 512)
    assert settings.docker_platform == "linux/amd64"
    assert settings.assign_public_ip == "ENABLED"
    assert settings.tags["environment"] == "dev"


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [(cpu, memory) for cpu, sizes in FARGATE_MEMORY_BY_CPU.items() for memory in sizes],
)
def test_every_task_size_fargate_accepts_is_accepted(cpu: int, memory: int) -> None:
    settings = parse(taskCpu=str(cpu), taskMemory=str(memory))
    assert (settings.task_cpu, settings.task_memory) == (cpu, memory)


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [
        (256, 4096, "with taskCpu 256 Fargate accepts 512, 1024, 2048 MiB"),
        (512, 512, "with taskCpu 512 Fargate accepts 1024, 2048, 3072, 4096 MiB"),
        (1024, 9216, "with taskCpu 1024 Fargate accepts 2048 to 8192 in steps of 1024 MiB"),
        (4096, 31744, "with taskCpu 4096 Fargate accepts 8192 to 30720 in steps of 1024 MiB"),
        (8192, 18432, "with taskCpu 8192 Fargate accepts 16384 to 61440 in steps of 4096 MiB"),
        (16384, 36864, "with taskCpu 16384 Fargate accepts 32768 to 122880 in steps of 8192"),
    ],
)
def test_a_memory_size_fargate_rejects_names_the_allowed_sizes(
    cpu: int, memory: int, expected: str
) -> None:
    message = error_for(taskCpu=str(cpu), taskMemory=str(memory))
    assert f"s3-fargate-jobs:taskMemory = {memory}" in message
    assert expected in message


def test_an_unknown_cpu_size_lists_the_sizes_fargate_has() -> None:
    message = error_for(taskCpu="300")
    assert "s3-fargate-jobs:taskCpu = 300" in message
    assert "256, 512, 1024, 2048, 4096, 8192, 16384" in message


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("networkMode", "hybrid", "public, private"),
        ("cpuArchitecture", "arm64", "X86_64, ARM64"),
        ("capacityProvider", "SPOT", "FARGATE, FARGATE_SPOT"),
    ],
)
def test_an_unknown_choice_names_the_key_the_value_and_the_choices(
    key: str, value: str, allowed: str
) -> None:
    message = error_for(**{key: value})
    assert f"s3-fargate-jobs:{key} = '{value}'" in message
    assert allowed in message


def test_a_retention_cloudwatch_does_not_accept_is_rejected() -> None:
    message = error_for(logRetentionDays="10")
    assert "s3-fargate-jobs:logRetentionDays = 10" in message
    assert "1, 3, 5, 7, 14, 30" in message


@pytest.mark.parametrize(
    ("upload_prefix", "suffixes", "result_prefix"),
    [
        ("data/", [], "data/results/"),
        ("", [], "results/"),
        ("uploads/", [".json"], "uploads/out/"),
        ("uploads/", ["json"], "uploads/out/"),
    ],
)
def test_a_result_prefix_the_upload_filter_would_match_is_rejected(
    upload_prefix: str, suffixes: list[str], result_prefix: str
) -> None:
    message = error_for(
        uploadPrefix=upload_prefix, uploadSuffixes=suffixes, resultPrefix=result_prefix
    )
    assert f"s3-fargate-jobs:resultPrefix = '{result_prefix}'" in message
    assert "would match the upload filter" in message


def test_a_result_prefix_inside_the_upload_prefix_is_fine_when_suffixes_exclude_results() -> None:
    settings = parse(uploadPrefix="", uploadSuffixes=[".csv"], resultPrefix="results/")
    assert settings.upload_suffixes == (".csv",)


def test_overlapping_suffixes_are_rejected_as_s3_would() -> None:
    assert "overlapping" in error_for(uploadSuffixes=[".csv", "data.csv"])


def test_a_suffix_listed_twice_is_rejected_as_s3_would() -> None:
    # Two identical filter rules for one event type overlap: S3 refuses the whole notification
    # configuration (API reference, FilterRule: "Overlapping prefixes and suffixes are not
    # supported").
    message = error_for(uploadSuffixes=[".csv", ".tsv", ".csv"])
    assert "s3-fargate-jobs:uploadSuffixes" in message
    assert 'overlapping suffix filters (".csv" ends with ".csv")' in message


@pytest.mark.parametrize("size", ["20", "201", "-1"])
def test_ephemeral_storage_outside_21_to_200_is_rejected(size: str) -> None:
    message = error_for(ephemeralStorageGiB=size)
    assert f"s3-fargate-jobs:ephemeralStorageGiB = {size}" in message
    assert "between 21 and 200" in message


@pytest.mark.parametrize(("architecture", "platform"), [("X86_64", "amd64"), ("ARM64", "arm64")])
def test_fargate_spot_is_accepted_on_both_architectures(architecture: str, platform: str) -> None:
    # ECS API reference, CapacityProviderStrategyItem: FARGATE_SPOT runs Linux X86_64 tasks on
    # platform 1.3.0+ and ARM64 tasks on 1.4.0+ (RunTask's default, LATEST, is 1.4.0).
    settings = parse(capacityProvider="FARGATE_SPOT", cpuArchitecture=architecture)
    assert settings.capacity_provider == "FARGATE_SPOT"
    assert settings.docker_platform == f"linux/{platform}"


def test_a_spot_arm64_stack_runs_arm64_tasks_on_fargate_spot() -> None:
    stack = evaluate("prod", {"capacityProvider": "FARGATE_SPOT", "cpuArchitecture": "ARM64"})
    task = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert task["runtimePlatform"]["cpuArchitecture"] == "ARM64"
    runner = stack.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    assert runner["CAPACITY_PROVIDER"] == "FARGATE_SPOT"
    providers = stack.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders").inputs
    assert providers["defaultCapacityProviderStrategies"] == [
        {"capacityProvider": "FARGATE_SPOT", "weight": 1}
    ]


def test_subnet_ids_without_a_vpc_id_are_rejected() -> None:
    message = error_for(subnetIds=["subnet-1"])
    assert "s3-fargate-jobs:subnetIds" in message
    assert "needs vpcId" in message


def test_a_non_number_where_a_number_belongs_names_the_key() -> None:
    assert "s3-fargate-jobs:taskCpu = 'lots'" in error_for(taskCpu="lots")


def test_a_malformed_tag_shows_the_expected_form() -> None:
    assert 'each tag is written "key=value"' in error_for(tags=["team"])


def test_bad_config_stops_the_program_before_any_resource_is_declared() -> None:
    with pytest.raises(ProgramError) as caught:
        evaluate("dev", {"taskMemory": 4096})
    assert isinstance(caught.value.__cause__, ConfigError)
    assert "s3-fargate-jobs:taskMemory = 4096" in str(caught.value)
    assert caught.value.declared == []


def test_pulumi_yaml_declares_every_key_the_program_reads_with_type_description_and_default() -> (
    None
):
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(CONFIG_KEYS)
    for key, spec in declared.items():
        assert spec["type"] in {"string", "integer", "boolean", "array"}, key
        assert spec["description"].strip(), key
        assert "default" in spec, key
        if spec["type"] == "array":
            assert spec["items"]["type"] in {"string", "integer"}, key


@pytest.mark.parametrize("stack", committed_stacks())
def test_stack_files_set_only_declared_keys(stack: str) -> None:
    values = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    ours = {k.split(":", 1)[1] for k in values if k.startswith("s3-fargate-jobs:")}
    assert ours <= set(CONFIG_KEYS)


@pytest.mark.parametrize("days", ["7", "-1", "36501"])
def test_noncurrent_version_days_shorter_than_a_redrive_or_absurd_are_rejected(days: str) -> None:
    message = error_for(noncurrentVersionDays=days)
    assert "noncurrentVersionDays" in message
    assert "0 keeps every version" in message
    assert "the dead-letter queues' 14-day retention" in message
    assert "must be between 14 and 36500" in message


def test_noncurrent_version_days_zero_keeps_every_version() -> None:
    assert parse(noncurrentVersionDays="0").noncurrent_version_days is None
    assert parse(noncurrentVersionDays="14").noncurrent_version_days == 14


@pytest.mark.parametrize("value", ["-1", "100001", "many"])
def test_a_task_cap_outside_what_is_allowed_is_rejected(value: str) -> None:
    message = error_for(maxConcurrentTasks=value)
    assert "maxConcurrentTasks" in message


def test_a_task_cap_of_zero_leaves_only_the_accounts_limits() -> None:
    assert parse(maxConcurrentTasks="0").max_concurrent_tasks == 0
    assert parse(maxConcurrentTasks="25").max_concurrent_tasks == 25


@pytest.mark.parametrize("minutes", ["0", "20161"])
def test_a_backlog_alarm_age_beyond_the_backlogs_14_days_is_rejected(minutes: str) -> None:
    message = error_for(backlogAgeAlarmMinutes=minutes)
    assert "backlogAgeAlarmMinutes" in message
    assert "must be between 1 and 20160" in message


# --- retries, waiting and records: the runner's settings, from the stack ---------------------


def test_by_default_a_job_gets_three_attempts_retries_no_exit_code_and_waits_up_to_14_days() -> (
    None
):
    defaults = {
        key: spec["default"]
        for key, spec in yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"].items()
    }
    settings = parse_settings(defaults, project="s3-fargate-jobs", stack="test")
    assert settings.task_max_attempts == 3
    assert settings.task_retry_exit_codes == ()
    assert settings.task_retry_timeouts is False
    assert settings.spot_fallback_to_on_demand is False
    assert settings.wait_timeout_minutes == 14 * 24 * 60
    assert settings.job_record_days == 30


def test_the_retry_and_record_bounds_are_the_runners_own() -> None:
    # The runner refuses a value outside its bounds when its container starts: every upload
    # would then fail. The config must refuse the same values at `pulumi up`.
    assert (MAX_ATTEMPTS_BOUNDS, RECORD_DAYS_BOUNDS) == (TASK_MAX_ATTEMPTS, JOB_RECORD_DAYS)
    assert tuple(minutes * 60 for minutes in WAIT_TIMEOUT_MINUTES) == WAIT_TIMEOUT_BOUNDS
    assert TASK_TIMEOUT_MINUTES[1] * 60 == TASK_TIMEOUT_BOUNDS[1]
    assert (DEFAULT_MAX_ATTEMPTS, DEFAULT_RECORD_DAYS) == (3, 30)
    assert WAIT_TIMEOUT_MINUTES[1] * 60 == DEFAULT_WAIT_TIMEOUT_SECONDS


def test_exit_codes_to_retry_are_taken_as_numbers_or_strings_each_once_in_order() -> None:
    assert parse(taskRetryExitCodes="[75, 3]").task_retry_exit_codes == (3, 75)
    assert parse(taskRetryExitCodes=["75", 75, 137]).task_retry_exit_codes == (75, 137)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("taskMaxAttempts", "0", "must be between 1 and 10"),
        ("taskMaxAttempts", "11", "must be between 1 and 10"),
        ("taskRetryExitCodes", [0], "exit code 0 is not a failure"),
        ("taskRetryExitCodes", [256], "list codes from 1 to 255"),
        ("taskRetryExitCodes", ["often"], "expected a list of whole numbers"),
        ("taskRetryExitCodes", [True], "expected a list of whole numbers"),
        ("taskRetryExitCodes", [8], "set taskRetryTimeouts to true instead"),
        ("taskRetryTimeouts", "sometimes", "expected true or false"),
        ("spotFallbackToOnDemand", "yes", "expected true or false"),
        ("waitTimeoutMinutes", "9", "must be between 10 and 20160"),
        ("waitTimeoutMinutes", "20161", "must be between 10 and 20160"),
        ("jobRecordDays", "0", "must be between 1 and 3650"),
        ("jobRecordDays", "3651", "must be between 1 and 3650"),
    ],
)
def test_a_retry_or_record_setting_the_runner_would_refuse_is_named_with_what_is_allowed(
    key: str, value: Any, says: str
) -> None:
    message = error_for(**{key: value})
    assert f"s3-fargate-jobs:{key} = " in message
    assert says in message


def test_an_alarm_age_the_wait_limit_never_lets_a_job_reach_is_refused_naming_both() -> None:
    message = error_for(waitTimeoutMinutes="60", backlogAgeAlarmMinutes="60")
    assert "s3-fargate-jobs:backlogAgeAlarmMinutes = 60" in message
    assert "waitTimeoutMinutes (60)" in message
    assert parse(waitTimeoutMinutes="61", backlogAgeAlarmMinutes="60").wait_timeout_minutes == 61


def test_spot_fallback_is_accepted_whatever_the_capacity_provider() -> None:
    # Pulumi.yaml says it only matters with FARGATE_SPOT; a stack that switches providers back
    # and forth need not unset it.
    assert parse(spotFallbackToOnDemand="true").spot_fallback_to_on_demand is True
    assert parse(capacityProvider="FARGATE_SPOT", spotFallbackToOnDemand="true").capacity_provider
