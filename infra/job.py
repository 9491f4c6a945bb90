"""The Fargate task definition for one job, its log group and its two roles."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from .aws_context import AwsContext
from .config import SecretStore, Settings
from .policies import (
    Statement,
    allow,
    log_group_resources,
    policy_document,
    role_with_policy,
    service_trust_policy,
)

CONTAINER_NAME = "job"
CONTAINER_USER = "1000:1000"  # the non-root user the image creates
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/scratch"  # the only writable path: the root filesystem is read-only
LOG_STREAM_PREFIX = "job"


def ecs_tasks_trust_policy(context: AwsContext) -> pulumi.Output[str]:
    # The confused-deputy guard the ECS guide documents for task roles: only ECS acting for
    # this account. The execution role trusts ECS as the guide's execution-role page shows,
    # without it: no page says ECS sends these keys when it assumes that role, and if it did
    # not, every task would fail to start. Passing either role needs iam:PassRole here anyway.
    return service_trust_policy(
        "ecs-tasks.amazonaws.com",
        condition={
            "ArnLike": {"aws:SourceArn": context.arn("ecs", "*")},
            "StringEquals": {"aws:SourceAccount": context.account_id},
        },
    )


@dataclass(frozen=True)
class JobSecret:
    """One secret as the task definition injects it, and what the execution role may read."""

    name: str
    value_from: pulumi.Input[str]  # what ECS reads: the ARN (with a JSON key, if given)
    resource: pulumi.Input[str]  # what IAM grants: the parameter or secret itself
    store: SecretStore


def job_secrets(settings: Settings, context: AwsContext) -> list[JobSecret]:
    """Every secret by ARN. A parameter's ARN is built from its name; a secret's is looked up
    (its ARN ends in six characters Secrets Manager chose). Only metadata is read, never a
    value: the stack's state holds names and ARNs."""
    found = []
    for name, ref in sorted(settings.task_secrets.items()):
        if ref.store == "ssm":
            path = ref.ref if ref.is_arn or ref.ref.startswith("/") else f"/{ref.ref}"
            arn = ref.ref if ref.is_arn else context.arn("ssm", f"parameter{path}")
            found.append(JobSecret(name, arn, arn, "ssm"))
        elif ref.is_arn:
            base = secret_base_arn(ref.ref)
            found.append(JobSecret(name, ref.ref, base, "secretsmanager"))
        else:
            arn = aws.secretsmanager.get_secret_output(name=ref.ref).arn
            found.append(JobSecret(name, arn, arn, "secretsmanager"))
    return found


def secret_base_arn(arn: str) -> str:
    """The secret a (possibly partial, possibly JSON-key) secret ARN names, as IAM matches it."""
    parts = arn.split(":")
    base = ":".join(parts[:7])  # arn:partition:secretsmanager:region:account:secret:name-AbCdEf
    # Without Secrets Manager's six-character suffix, IAM needs it as a wildcard.
    return base if re.search(r"-[A-Za-z0-9]{6}$", base) else f"{base}-??????"


def execution_policy(
    repository_arn: pulumi.Input[str],
    log_group_arn: pulumi.Input[str],
    secrets: list[JobSecret],
    kms_key_arns: tuple[str, ...],
    context: AwsContext,
) -> pulumi.Output[str]:
    reading: list[Statement] = []
    parameters = [secret.resource for secret in secrets if secret.store == "ssm"]
    managed = [secret.resource for secret in secrets if secret.store == "secretsmanager"]
    if parameters:
        reading.append(allow("ReadTheJobsParameters", ["ssm:GetParameters"], parameters))
    if managed:
        reading.append(allow("ReadTheJobsSecrets", ["secretsmanager:GetSecretValue"], managed))
    if kms_key_arns:
        # Only as SSM or Secrets Manager decrypts a secret for ECS, never directly.
        via = [
            pulumi.Output.concat(service, ".", context.region, ".amazonaws.com")
            for service in ("ssm", "secretsmanager")
        ]
        reading.append(
            allow(
                "DecryptTheJobsSecrets",
                ["kms:Decrypt"],
                list(kms_key_arns),
                condition={"StringEquals": {"kms:ViaService": via}},
            )
        )
    return policy_document(
        [
            allow(
                "PullThisRepositorysImages",
                [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                [repository_arn],
            ),
            allow("GetRegistryToken", ["ecr:GetAuthorizationToken"], ["*"]),
            allow(
                "WriteThisLogGroup",
                ["logs:CreateLogStream", "logs:PutLogEvents"],
                log_group_resources(log_group_arn),
            ),
            *reading,
        ]
    )


def task_policy(bucket_arn: pulumi.Input[str], settings: Settings) -> pulumi.Output[str]:
    return policy_document(
        [
            allow(
                "ReadUploads",
                ["s3:GetObject", "s3:GetObjectVersion"],
                [pulumi.Output.concat(bucket_arn, "/", settings.upload_prefix, "*")],
            ),
            allow(
                "WriteResults",
                ["s3:PutObject"],
                [pulumi.Output.concat(bucket_arn, "/", settings.result_prefix, "*")],
            ),
        ]
    )


def container_definitions(
    settings: Settings,
    context: AwsContext,
    image: pulumi.Input[str],
    log_group_name: pulumi.Input[str],
    secrets: list[JobSecret] | None = None,
) -> pulumi.Output[str]:
    definition: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "essential": True,
        # The container may use the whole task; stating it also keeps RunTask emulators happy.
        "memory": settings.task_memory,
        "readonlyRootFilesystem": True,
        # No "privileged" key, not even false: ECS lists it as not valid on Fargate, where no
        # container is privileged ("Task definition differences for Fargate").
        "user": CONTAINER_USER,
        # An init process forwards SIGTERM (task stop, Spot interruption) to the job.
        "linuxParameters": {"initProcessEnabled": True},
        "environment": [
            {"name": "RESULT_PREFIX", "value": settings.result_prefix},
            {"name": "TMPDIR", "value": SCRATCH_PATH},
            # Both spellings: older SDKs read only AWS_DEFAULT_REGION.
            {"name": "AWS_REGION", "value": context.region},
            {"name": "AWS_DEFAULT_REGION", "value": context.region},
            *(
                # The job stops itself at the limit (see task/); its non-zero exit is reported
                # as a failed job like any other.
                [{"name": "TASK_TIMEOUT_SECONDS", "value": str(settings.task_timeout_minutes * 60)}]
                if settings.task_timeout_minutes
                else []
            ),
            *(
                [{"name": "TASK_PROCESSOR", "value": settings.task_processor}]
                if settings.task_processor
                else []
            ),
            *(
                {"name": name, "value": value}
                for name, value in sorted(settings.task_environment.items())
            ),
        ],
        # Injected by ECS at start from SSM or Secrets Manager: never a plain value here.
        **(
            {"secrets": [{"name": s.name, "valueFrom": s.value_from} for s in secrets]}
            if secrets
            else {}
        ),
        "mountPoints": [
            {"sourceVolume": SCRATCH_VOLUME, "containerPath": SCRATCH_PATH, "readOnly": False}
        ],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group_name,
                "awslogs-region": context.region,
                "awslogs-stream-prefix": LOG_STREAM_PREFIX,
            },
        },
    }
    return pulumi.Output.json_dumps([definition])


class JobDefinition(pulumi.ComponentResource):
    task_definition: aws.ecs.TaskDefinition
    log_group: aws.cloudwatch.LogGroup
    execution_role: aws.iam.Role
    task_role: aws.iam.Role

    def __init__(
        self,
        name: str,
        settings: Settings,
        context: AwsContext,
        *,
        image: pulumi.Input[str],
        repository_arn: pulumi.Input[str],
        bucket_arn: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("s3fargatejobs:index:JobDefinition", name, None, opts)
        tags = dict(settings.tags)

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/{settings.name_prefix}/jobs",
            retention_in_days=settings.log_retention_days,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        secrets = job_secrets(settings, context)
        self.execution_role, execution_permissions = role_with_policy(
            f"{name}-execution",
            description="ECS pulls the image, ships the logs and reads the secrets of the job",
            trust_policy=service_trust_policy("ecs-tasks.amazonaws.com"),
            policy=execution_policy(
                repository_arn, self.log_group.arn, secrets, settings.secret_kms_key_arns, context
            ),
            tags=tags,
            parent=self,
        )
        self.task_role, task_permissions = role_with_policy(
            f"{name}-task",
            description="The job's own identity: read uploads, write results",
            trust_policy=ecs_tasks_trust_policy(context),
            policy=task_policy(bucket_arn, settings),
            tags=tags,
            parent=self,
        )
        self.task_definition = aws.ecs.TaskDefinition(
            name,
            family=settings.task_family,
            cpu=str(settings.task_cpu),
            memory=str(settings.task_memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture=settings.cpu_architecture
            ),
            ephemeral_storage=(
                aws.ecs.TaskDefinitionEphemeralStorageArgs(
                    size_in_gib=settings.ephemeral_storage_gib
                )
                if settings.ephemeral_storage_gib
                else None
            ),
            execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name=SCRATCH_VOLUME)],
            container_definitions=container_definitions(
                settings, context, image, self.log_group.name, secrets
            ),
            tags=tags,
            # A task must not start before its roles can do what it needs.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[execution_permissions, task_permissions]
            ),
        )
        self.register_outputs(
            {
                "taskDefinitionArn": self.task_definition.arn,
                "logGroupName": self.log_group.name,
            }
        )
