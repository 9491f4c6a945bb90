"""The job's code, image, settings and secrets, from stack config to the task definition."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from infra.args import S3FargateJobsArgs
from infra.component import validate
from infra.config import ConfigError, check_processor_in_default_image, parse_settings
from jobctl.evaluate import Evaluation, ProgramError, evaluate, stack_config
from tests.infra.conftest import as_json
from tests.infra.test_config import error_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament still imports pkg_resources
    from parliament import analyze_policy_string

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"
PARAMETER_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/shared/licence"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:partner-token-Xy12Ab"
JOB = {
    # A processor the default image holds: one it does not is refused (tests below).
    "taskProcessor": "task.processor:process",
    "taskEnvironment": ["MODEL=small", "THRESHOLD=0.8", "GREETING=a=b"],
    "taskSecrets": [
        "DB_PASSWORD=ssm:/media/db-password",
        "API_KEY=secretsmanager:media/api-key",
        "LICENCE=" + PARAMETER_ARN,
        "PARTNER_TOKEN=" + SECRET_ARN + ":token::",
    ],
    "taskSecretsKmsKeyArns": [KEY_ARN],
}


@pytest.fixture(scope="module", params=["dev", "prod"])
def configured(request: pytest.FixtureRequest) -> Evaluation:
    return evaluate(request.param, JOB)


def container(stack: Evaluation) -> dict[str, Any]:
    task = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    only: dict[str, Any] = as_json(task["containerDefinitions"])[0]
    return only


def execution_statements(stack: Evaluation) -> dict[str, dict[str, Any]]:
    policy = as_json(
        stack.named("aws:iam/rolePolicy:RolePolicy", "-job-execution").inputs["policy"]
    )
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def test_the_processor_and_plain_variables_reach_the_containers_environment(
    configured: Evaluation,
) -> None:
    environment = {e["name"]: e["value"] for e in container(configured)["environment"]}
    assert environment["TASK_PROCESSOR"] == "task.processor:process"
    assert environment["MODEL"] == "small"
    assert environment["THRESHOLD"] == "0.8"
    assert environment["GREETING"] == "a=b"


def test_secrets_are_injected_by_ecs_from_their_arns_never_as_plain_values(
    configured: Evaluation,
) -> None:
    definition = container(configured)
    secrets = {s["name"]: s["valueFrom"] for s in definition["secrets"]}
    assert secrets == {
        "API_KEY": "arn:aws:secretsmanager:us-east-1:123456789012:secret:media/api-key-AbC123",
        "DB_PASSWORD": "arn:aws:ssm:us-east-1:123456789012:parameter/media/db-password",
        "LICENCE": PARAMETER_ARN,
        "PARTNER_TOKEN": SECRET_ARN + ":token::",
    }
    names = {e["name"] for e in definition["environment"]}
    assert not names & set(secrets)


def test_the_execution_role_reads_exactly_those_secrets_and_decrypts_only_through_them(
    configured: Evaluation,
) -> None:
    statements = execution_statements(configured)
    assert statements["ReadTheJobsParameters"]["Action"] == ["ssm:GetParameters"]
    assert sorted(statements["ReadTheJobsParameters"]["Resource"]) == [
        "arn:aws:ssm:us-east-1:123456789012:parameter/media/db-password",
        PARAMETER_ARN,
    ]
    assert statements["ReadTheJobsSecrets"]["Action"] == ["secretsmanager:GetSecretValue"]
    # The JSON key is ECS's business; IAM grants the secret itself.
    assert sorted(statements["ReadTheJobsSecrets"]["Resource"]) == sorted(
        ["arn:aws:secretsmanager:us-east-1:123456789012:secret:media/api-key-AbC123", SECRET_ARN]
    )
    decrypt = statements["DecryptTheJobsSecrets"]
    assert (decrypt["Action"], decrypt["Resource"]) == (["kms:Decrypt"], [KEY_ARN])
    assert decrypt["Condition"] == {
        "StringEquals": {
            "kms:ViaService": [
                "ssm.us-east-1.amazonaws.com",
                "secretsmanager.us-east-1.amazonaws.com",
            ]
        }
    }


def test_parliament_finds_nothing_in_the_execution_role_with_secrets(
    configured: Evaluation,
) -> None:
    policy = as_json(
        configured.named("aws:iam/rolePolicy:RolePolicy", "-job-execution").inputs["policy"]
    )
    findings = analyze_policy_string(json.dumps(policy)).findings
    unexpected = [
        (f.issue, f.detail)
        for f in findings
        if not (f.issue == "RESOURCE_STAR" and f.detail == ["ecr:GetAuthorizationToken"])
    ]
    assert unexpected == []


def test_the_task_role_does_not_get_the_secrets(configured: Evaluation) -> None:
    policy = as_json(
        configured.named("aws:iam/rolePolicy:RolePolicy", "-job-task").inputs["policy"]
    )
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"}


def test_without_secrets_the_execution_role_reads_none(dev: Evaluation) -> None:
    assert set(execution_statements(dev)) == {
        "PullThisRepositorysImages",
        "GetRegistryToken",
        "WriteThisLogGroup",
    }
    assert "secrets" not in container(dev)


def test_a_partial_secret_arn_is_granted_with_the_suffix_wildcard() -> None:
    # Without the "-AbC123" Secrets Manager appends (a name ending in "-" and six letters looks
    # like one, which is why AWS advises against such names).
    partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:partner"
    stack = evaluate("dev", {"taskSecrets": [f"TOKEN={partial}"]})
    resources = execution_statements(stack)["ReadTheJobsSecrets"]["Resource"]
    assert resources == [partial + "-??????"]


# --- the image --------------------------------------------------------------------------------


def test_another_build_context_is_built_and_pushed_instead_of_task(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM alpine:3.20\nCMD ["true"]\n')
    stack = evaluate("dev", {"taskImageContext": str(tmp_path)})
    build = stack.one("docker:index/image:Image").inputs["build"]
    assert Path(build["context"]) == tmp_path
    assert Path(build["dockerfile"]) == tmp_path / "Dockerfile"


def test_a_build_context_without_a_dockerfile_is_named_before_anything_is_declared(
    tmp_path: Path,
) -> None:
    with pytest.raises(ProgramError) as raised:
        evaluate("dev", {"taskImageContext": str(tmp_path)})
    assert "taskImageContext" in str(raised.value)
    assert "is not a folder with a Dockerfile" in str(raised.value)


# --- a processor the default image does not hold ----------------------------------------------


@pytest.mark.parametrize(
    ("processor", "says"),
    [
        ("task.nosuch:process", "the default image has no module task.nosuch (no task/nosuch.py"),
        ("task.processor:proces", "defines no function 'proces' at top level"),
        ("tests.e2e.processors:with_settings", "only as the package 'task'"),
    ],
    ids=["no-such-module", "no-such-function", "outside-the-image"],
)
def test_a_processor_the_default_image_does_not_hold_is_refused_at_up_naming_the_key(
    processor: str, says: str
) -> None:
    # Without this every upload's task would start, fail to import it and exit 2.
    with pytest.raises(ProgramError) as raised:
        evaluate("dev", {"taskProcessor": processor})
    message = str(raised.value)
    assert message.startswith(f"Config s3-fargate-jobs:taskProcessor = {processor!r} is not valid")
    assert says in message
    assert "pulumi config set taskProcessor" in message
    assert raised.value.declared == []


def test_the_component_names_its_argument_for_a_processor_the_image_does_not_hold() -> None:
    args = S3FargateJobsArgs(task_processor="task.nosuch:process")
    with pytest.raises(ConfigError) as raised:
        validate("media", args)
    assert str(raised.value).startswith(
        "S3FargateJobsArgs.task_processor = 'task.nosuch:process' is not valid"
    )


def test_the_missing_function_is_named_with_the_functions_the_module_has(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def first_line(chunks, obj):\n    return {}\n")
    message = processor_error(tmp_path, "task.mine:firstline")
    assert "defines no function 'firstline' at top level (its functions: first_line)" in message


def test_a_processor_module_that_does_not_parse_is_refused_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def process(chunks, obj)\n    return {}\n")
    assert "broken.py does not parse (line 1:" in processor_error(tmp_path, "task.broken:process")


@pytest.mark.parametrize(
    "source",
    [
        "def process(chunks, obj):\n    return {}\n",
        "from task.processor import process\n",
        "from task.processor import process as run\nprocess = run\n",
    ],
    ids=["defined", "re-exported", "assigned"],
)
def test_a_processor_defined_or_bound_at_top_level_is_accepted(tmp_path: Path, source: str) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text(source)
    settings = parse_settings(
        {**dev_raw_config(), "taskProcessor": "task.jobs:process"}, project="p", stack="s"
    )
    check_processor_in_default_image(settings, tmp_path)  # raises if refused


def test_with_its_own_image_the_processor_is_the_images_business(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM alpine:3.20\nCMD ["true"]\n')
    stack = evaluate("dev", {"taskImageContext": str(tmp_path), "taskProcessor": "mine:run"})
    environment = {e["name"]: e["value"] for e in container(stack)["environment"]}
    assert environment["TASK_PROCESSOR"] == "mine:run"


def dev_raw_config() -> dict[str, object]:
    return {key.split(":", 1)[1]: value for key, value in stack_config("dev").items()}


def processor_error(task_dir: Path, processor: str) -> str:
    settings = parse_settings(
        {**dev_raw_config(), "taskProcessor": processor}, project="p", stack="s"
    )
    with pytest.raises(ConfigError) as raised:
        check_processor_in_default_image(settings, task_dir)
    return str(raised.value)


# --- what the config refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("taskProcessor", "first_line.process", "expected module:function"),
        ("taskProcessor", ".relative:process", "expected module:function"),
        ("taskEnvironment", ["NO_EQUALS_SIGN"], 'each is written "NAME=value"'),
        ("taskEnvironment", ["1ST=x"], 'each is written "NAME=value"'),
        ("taskEnvironment", ["S3_KEY=x"], "set by the job contract or by AWS"),
        # The runner names each task's job and attempt; ECS's stop event hands them back.
        ("taskEnvironment", ["JOB_ID=x"], "set by the job contract or by AWS"),
        ("taskSecrets", ["JOB_ATTEMPT=ssm:/x"], "set by the job contract or by AWS"),
        ("taskEnvironment", ["AWS_PROFILE=x"], "set by the job contract or by AWS"),
        ("taskEnvironment", ["A=1", "A=2"], "A is given twice"),
        ("taskSecrets", ["TOKEN=vault:/x"], "ssm:<parameter name>, secretsmanager:"),
        ("taskSecrets", ["TOKEN=arn:aws:s3:::bucket/key"], "ssm:<parameter name>"),
        ("taskSecretsKmsKeyArns", ["alias/mine"], "expected the ARN of a KMS key"),
    ],
)
def test_a_job_setting_that_cannot_work_is_named_with_what_is_allowed(
    key: str, value: Any, says: str
) -> None:
    message = error_for(**{key: value})
    assert key in message
    assert says in message


def test_a_name_that_is_both_a_variable_and_a_secret_is_refused() -> None:
    message = error_for(taskEnvironment=["TOKEN=x"], taskSecrets=["TOKEN=ssm:/t"])
    assert "either a plain variable (taskEnvironment) or a secret" in message


def test_kms_keys_without_secrets_are_refused() -> None:
    message = error_for(taskSecretsKmsKeyArns=[KEY_ARN])
    assert "go with taskSecrets; there are none" in message
