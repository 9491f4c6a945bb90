"""The runner: a Lambda that S3 invokes for each upload and that starts one Fargate task.

Every event ends as a started task or, after Lambda's retries, a message in the dead-letter
queue: nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
from infra.queues import holding_queue

RUNTIME = "python3.13"
HANDLER = "handler.handler"
ARCHITECTURE = "arm64"
MEMORY_MB = 256  # RunTask calls only; more memory also buys a faster boto3 import on cold start
# Long enough for a multi-record event whose RunTask calls ride out throttling with retries.
TIMEOUT_SECONDS = 120
ASYNC_RETRIES = 2  # Lambda's maximum for asynchronous invocations


@dataclass(frozen=True)
class JobTarget:
    """What the runner starts, and where."""

    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    cluster_ready: pulumi.Resource
    task_definition_arn: pulumi.Input[str]
    container_name: str
    role_arns: tuple[pulumi.Input[str], pulumi.Input[str]]  # execution role, task role
    subnet_ids: pulumi.Input[Sequence[str]]
    security_group_id: pulumi.Input[str]


def function_code(source_dir: Path) -> pulumi.AssetArchive:
    """Only the runtime modules: no tests, caches or editor files end up in the package."""
    return pulumi.AssetArchive(
        {path.name: pulumi.FileAsset(str(path)) for path in sorted(source_dir.glob("*.py"))}
    )


def runner_policy(
    settings: Settings,
    context: AwsContext,
    target: JobTarget,
    log_group_arn: pulumi.Input[str],
    dead_letter_queue_arn: pulumi.Input[str],
) -> pulumi.Output[str]:
    return policy_document(
        [
            # Scoped to the family, any revision: since 2024 RunTask without a revision is
            # authorised against the latest one.
            allow(
                "RunTheJobOnThisClusterOnly",
                ["ecs:RunTask"],
                [context.arn("ecs", f"task-definition/{settings.task_family}:*")],
                condition={"ArnEquals": {"ecs:cluster": target.cluster_arn}},
            ),
            # propagateTags makes RunTask tag the new task, which ECS authorises separately.
            allow(
                "TagTasksItStarts",
                ["ecs:TagResource"],
                [context.arn("ecs", pulumi.Output.concat("task/", target.cluster_name, "/*"))],
                condition={"StringEquals": {"ecs:CreateAction": "RunTask"}},
            ),
            allow(
                "PassTheJobRolesToEcsOnly",
                ["iam:PassRole"],
                list(target.role_arns),
                condition={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            ),
            allow(
                "WriteOwnLogs",
                ["logs:CreateLogStream", "logs:PutLogEvents"],
                log_group_resources(log_group_arn),
            ),
            allow(
                "SendFailedEventsToDeadLetterQueue", ["sqs:SendMessage"], [dead_letter_queue_arn]
            ),
        ]
    )


class TaskRunner(pulumi.ComponentResource):
    function: aws.lambda_.Function
    dead_letter_queue: aws.sqs.Queue
    log_group: aws.cloudwatch.LogGroup
    permission: aws.lambda_.Permission
    notification: aws.s3.BucketNotification

    def __init__(
        self,
        name: str,
        settings: Settings,
        context: AwsContext,
        *,
        source_dir: Path,
        bucket: aws.s3.Bucket,
        bucket_configured: list[pulumi.Resource],
        target: JobTarget,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("s3fargatejobs:index:TaskRunner", name, None, opts)
        tags = dict(settings.tags)

        self.dead_letter_queue = holding_queue(
            f"{name}-dlq", tags, pulumi.ResourceOptions(parent=self, protect=settings.protect)
        )
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/{settings.project}/{settings.stack}/runner",
            retention_in_days=settings.log_retention_days,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        role, permissions = role_with_policy(
            f"{name}-role",
            description="The runner Lambda: start the job's Fargate tasks, nothing else",
            trust_policy=service_trust_policy("lambda.amazonaws.com"),
            policy=runner_policy(
                settings, context, target, self.log_group.arn, self.dead_letter_queue.arn
            ),
            tags=tags,
            parent=self,
        )
        self.function = aws.lambda_.Function(
            name,
            description="Starts one Fargate task per object created under the upload prefix",
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=HANDLER,
            code=function_code(source_dir),
            role=role.arn,
            memory_size=MEMORY_MB,
            timeout=TIMEOUT_SECONDS,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables={
                    "CLUSTER_ARN": target.cluster_arn,
                    "TASK_DEFINITION_ARN": target.task_definition_arn,
                    "CONTAINER_NAME": target.container_name,
                    "SUBNETS": pulumi.Output.from_input(target.subnet_ids).apply(",".join),
                    "SECURITY_GROUPS": target.security_group_id,
                    "ASSIGN_PUBLIC_IP": settings.assign_public_ip,
                    "CAPACITY_PROVIDER": settings.capacity_provider,
                    "RESULT_PREFIX": settings.result_prefix,
                }
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON",
                log_group=self.log_group.name,
                application_log_level="INFO",
                system_log_level="WARN",
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[permissions, target.cluster_ready]
            ),
        )
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-async",
            function_name=self.function.name,
            maximum_retry_attempts=ASYNC_RETRIES,
            maximum_event_age_in_seconds=settings.max_event_age_seconds,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=self.dead_letter_queue.arn
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.permission = aws.lambda_.Permission(
            f"{name}-s3-invoke",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal="s3.amazonaws.com",
            source_arn=bucket.arn,
            source_account=context.account_id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The only notification configuration of the bucket (a second one would replace it).
        # S3 validates the destination when it is set, so the permission must exist first.
        self.notification = aws.s3.BucketNotification(
            f"{name}-trigger",
            bucket=bucket.id,
            lambda_functions=[
                aws.s3.BucketNotificationLambdaFunctionArgs(
                    lambda_function_arn=self.function.arn,
                    events=["s3:ObjectCreated:*"],
                    filter_prefix=settings.upload_prefix or None,
                    filter_suffix=suffix,
                )
                for suffix in (settings.upload_suffixes or (None,))
            ],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.permission, *bucket_configured]
            ),
        )
        self.register_outputs(
            {
                "functionName": self.function.name,
                "deadLetterQueueUrl": self.dead_letter_queue.url,
            }
        )
