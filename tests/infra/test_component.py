"""The whole system as one component: from this program's config, and from a user's program
with an existing bucket and VPC."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from infra.args import ExistingNotifications, S3FargateJobsArgs, argument_fields
from infra.component import validate
from infra.config import CONFIG_KEYS, ConfigError, argument_name, parse_settings
from jobctl.evaluate import PROJECT_DIR, Evaluation, ProgramError, evaluate_program, stack_config
from tests.infra.conftest import as_json

USER_PROGRAM = Path(__file__).parent / "user_program"
FUNCTION = "aws:lambda/function:Function"
NOTIFICATION = "aws:s3/bucketNotification:BucketNotification"


def user_program(**config: str) -> Evaluation:
    return evaluate_program(
        USER_PROGRAM,
        "media-platform",
        "staging",
        {f"media-platform:{k}": v for k, v in config.items()},
    )


@pytest.fixture(scope="module")
def users() -> Evaluation:
    return user_program()


# --- the arguments are the config, typed --------------------------------------------------------


def test_every_config_key_is_an_argument_of_the_component_and_nothing_else_is_missing() -> None:
    assert {argument_name(key) for key in CONFIG_KEYS} <= argument_fields()
    assert argument_fields() - {argument_name(key) for key in CONFIG_KEYS} == {
        "bucket_name",
        "existing_bucket_notifications",
    }


def test_the_arguments_defaults_are_pulumi_yamls() -> None:
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    raw = S3FargateJobsArgs().to_config()
    for key, spec in declared.items():
        assert raw[key] == spec["default"], key


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_stacks_config_becomes_arguments_that_validate_into_the_same_settings(
    stack: str,
) -> None:
    raw = {key.split(":", 1)[1]: value for key, value in stack_config(stack).items()}
    settings = parse_settings(raw, project="s3-fargate-jobs", stack=stack)
    again = parse_settings(
        S3FargateJobsArgs.from_settings(settings).to_config(),
        project="s3-fargate-jobs",
        stack=stack,
    )
    assert again == settings


def test_a_bad_argument_is_named_as_the_argument_not_as_a_config_key() -> None:
    from infra.config import ARGS_NAMING, ConfigError, naming

    with naming(ARGS_NAMING), pytest.raises(ConfigError) as raised:
        parse_settings(
            dataclasses.replace(S3FargateJobsArgs(), task_cpu=300).to_config(),
            project="p",
            stack="s",
        )
    assert str(raised.value).startswith("S3FargateJobsArgs.task_cpu = 300 is not valid:")
    assert "pulumi config" not in str(raised.value)


# --- a user's program: an existing bucket and VPC ------------------------------------------------


def test_with_an_existing_bucket_the_component_creates_no_bucket(users: Evaluation) -> None:
    assert users.of_type("aws:s3/bucket:Bucket") == []
    assert users.outputs["bucket"] == "team-media"


def test_the_existing_buckets_other_notifications_are_kept_beside_the_trigger(
    users: Evaluation,
) -> None:
    notification = users.one(NOTIFICATION).inputs
    assert notification["bucket"] == "team-media"
    (audit,) = notification["queues"]
    assert audit["queueArn"].endswith(":media-audit")
    assert audit["events"] == ["s3:ObjectRemoved:*"]
    (trigger,) = notification["lambdaFunctions"]
    assert trigger["lambdaFunctionArn"] == users.one(FUNCTION).outputs["arn"]
    assert trigger["filterPrefix"] == "incoming/"


def test_an_existing_buckets_eventbridge_delivery_stays_on_when_the_user_states_it() -> None:
    # S3's one notification configuration holds the EventBridge flag too; the provider writes
    # false unless told, which would switch off what the bucket already sent to EventBridge.
    notification = user_program(eventbridge="true").one(NOTIFICATION)
    assert notification.inputs["eventbridge"] is True
    (audit,) = notification.inputs["queues"]
    assert audit["queueArn"].endswith(":media-audit")


def test_eventbridge_stays_off_unless_stated(users: Evaluation, dev: Evaluation) -> None:
    assert users.one(NOTIFICATION).inputs.get("eventbridge") is False
    assert dev.one(NOTIFICATION).inputs.get("eventbridge") is False  # the bucket it created


def test_destroying_the_component_empties_the_buckets_configuration_unless_told_to_retain_it(
    users: Evaluation,
) -> None:
    # The provider deletes a BucketNotification by writing an empty configuration.
    assert users.one(NOTIFICATION).retain_on_delete is False
    assert user_program(retainNotifications="true").one(NOTIFICATION).retain_on_delete is True


def test_notifications_of_an_existing_bucket_without_one_are_refused_naming_both() -> None:
    args = S3FargateJobsArgs(existing_bucket_notifications=ExistingNotifications(eventbridge=True))
    with pytest.raises(ConfigError) as raised:
        validate("media", args)  # what the component runs before declaring anything
    assert "existing_bucket_notifications" in str(raised.value)
    assert "bucket_name is not set" in str(raised.value)


def test_the_job_reads_and_writes_only_its_prefixes_of_the_existing_bucket(
    users: Evaluation,
) -> None:
    task_policy = as_json(
        users.named("aws:iam/rolePolicy:RolePolicy", "-job-task").inputs["policy"]
    )
    resources = {s["Sid"]: s["Resource"] for s in task_policy["Statement"]}
    assert resources == {
        "ReadUploads": ["arn:aws:s3:::team-media/incoming/*"],
        "WriteResults": ["arn:aws:s3:::team-media/processed/*"],
    }
    permission = users.named("aws:lambda/permission:Permission", "-s3-invoke").inputs
    assert permission["sourceArn"] == "arn:aws:s3:::team-media"


def test_with_an_existing_vpc_the_tasks_run_in_its_subnets(users: Evaluation) -> None:
    assert users.of_type("awsx:ec2:Vpc") == []
    group = users.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert group["vpcId"] == "vpc-0a1b2c3d4e5f67890"
    env = users.one(FUNCTION).inputs["environment"]["variables"]
    assert env["SUBNETS"] == "subnet-0aaa1111,subnet-0bbb2222"


def test_names_follow_the_components_name_so_two_can_share_a_stack(users: Evaluation) -> None:
    task = users.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert task["family"] == "media-job"
    groups = {g.inputs["name"] for g in users.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert groups == {"/media/jobs", "/media/runner"}
    container = as_json(task["containerDefinitions"])[0]
    assert {"name": "MODEL", "value": "small"} in container["environment"]


def test_an_existing_bucket_without_its_notifications_is_refused_before_anything_is_declared() -> (
    None
):
    with pytest.raises(ProgramError) as raised:
        user_program(forgetNotifications="true")
    assert "existing_bucket_notifications" in str(raised.value)
    assert "one notification configuration per bucket" in str(raised.value)
    assert raised.value.declared == []


def test_an_existing_bucket_in_another_region_is_refused_naming_both() -> None:
    with pytest.raises(ProgramError) as raised:
        user_program(bucket="eu-west-1-media")
    assert "is in eu-west-1, the stack in us-east-1" in str(raised.value)


def test_the_config_module_never_imports_the_components_arguments() -> None:
    # Issue 21: args builds on config; config importing args back (even lazily, even for type
    # checking) is a circle that breaks as soon as either moves.
    for module in ("config", "sources"):
        tree = ast.parse((PROJECT_DIR / "infra" / f"{module}.py").read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        }
        assert "args" not in imported, module
    from infra.args import load_args

    assert load_args.__module__ == "infra.args"
