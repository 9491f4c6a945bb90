"""The Fargate task definition for one job, its log group and its two roles."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws_context import AwsContext
from infra.config import Settings
from infra.policies import (
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
    # Confused-deputy guard recommended for ECS task roles: only ECS acting for this account.
    return service_trust_policy(
        "ecs-tasks.amazonaws.com",
        condition={
            "ArnLike": {"aws:SourceArn": context.arn("ecs", "*")},
            "StringEquals": {"aws:SourceAccount": context.account_id},
        },
    )


def execution_policy(
    repository_arn: pulumi.Input[str], log_group_arn: pulumi.Input[str]
) -> pulumi.Output[str]:
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
        ],
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
            name=f"/{settings.project}/{settings.stack}/jobs",
            retention_in_days=settings.log_retention_days,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.execution_role, execution_permissions = role_with_policy(
            f"{name}-execution",
            description="ECS pulls the job image and ships its logs with this role",
            trust_policy=ecs_tasks_trust_policy(context),
            policy=execution_policy(repository_arn, self.log_group.arn),
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
                settings, context, image, self.log_group.name
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
