"""The runner: a Lambda that S3 invokes for each upload and that starts one Fargate task.

An upload that cannot start now (capacity, the account's quota, the task cap) waits in the
backlog queue, which the same Lambda consumes through an event source mapping. Every event ends
as a started task or a message in the dead-letter queue: nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws

from .args import ExistingNotifications
from .aws_context import AwsContext
from .config import Settings
from .policies import (
    Statement,
    allow,
    log_group_resources,
    policy_document,
    role_with_policy,
    service_trust_policy,
)
from .queues import backlog_queue, holding_queue

RUNTIME = "python3.13"
HANDLER = "handler.handler"
ARCHITECTURE = "arm64"
MEMORY_MB = 256  # RunTask calls only; more memory also buys a faster boto3 import on cold start
# Long enough for a multi-record event whose RunTask calls ride out throttling with retries.
TIMEOUT_SECONDS = 120
ASYNC_RETRIES = 2  # Lambda's maximum for asynchronous invocations
# The event source mapping wants the queue's visibility timeout at least six times the
# function's (Lambda developer guide, SQS event source mapping).
BACKLOG_VISIBILITY_SECONDS = 6 * TIMEOUT_SECONDS
# Every deferral is a receive: SQS's largest count, which 13 days of the runner's longest delay
# stay under (taskrunner/backlog.py MAX_RECEIVES is the same number).
BACKLOG_MAX_RECEIVES = 1000
# Uploads come back at random moments: up to 100 of them within 10 s make one invocation, and
# two invocations at once start tasks faster than Fargate's launch rate lets them run anyway.
BACKLOG_BATCH_SIZE = 100
BACKLOG_BATCHING_WINDOW_SECONDS = 10
BACKLOG_MAXIMUM_CONCURRENCY = 2  # the smallest the mapping allows
# The cap's table: its lock item and the ledger of started uploads, which expire by this field.
STATE_TABLE_KEY = "pk"
STATE_TABLE_TTL_ATTRIBUTE = "expiresAt"


@dataclass(frozen=True)
class UploadSource:
    """The bucket uploads come from: its name and ARN, the configuration S3 must have settled
    before it accepts a notification, and what else it notifies (an existing bucket's)."""

    name: pulumi.Input[str]
    arn: pulumi.Input[str]
    configured: Sequence[pulumi.Resource] = ()
    other_notifications: ExistingNotifications = field(default_factory=ExistingNotifications)


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
    *,
    log_group_arn: pulumi.Input[str],
    dead_letter_queue_arn: pulumi.Input[str],
    backlog_queue_arn: pulumi.Input[str],
    state_table_arn: pulumi.Input[str] | None,
) -> pulumi.Output[str]:
    cap: list[Statement] = []
    if state_table_arn is not None:
        cap = [
            # A cluster-wide ListTasks names no container instance, so IAM authorises it
            # against "*" (the reference lists only container-instance; the ECS guide's own
            # example grants "*"): the ecs:cluster condition is what keeps it to this cluster.
            # See WILDCARD_RESOURCE_EXCEPTIONS.
            allow(
                "CountTheJobsTasksForTheCap",
                ["ecs:ListTasks"],
                ["*"],
                condition={"ArnEquals": {"ecs:cluster": target.cluster_arn}},
            ),
            # Whether a task started a moment ago has stopped already.
            allow(
                "SeeWhetherRecentTasksStopped",
                ["ecs:DescribeTasks"],
                [context.arn("ecs", pulumi.Output.concat("task/", target.cluster_name, "/*"))],
                condition={"ArnEquals": {"ecs:cluster": target.cluster_arn}},
            ),
            allow(
                "TakeTurnsAndRememberStartedUploads",
                [
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:BatchGetItem",
                ],
                [state_table_arn],
            ),
        ]
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
            allow(
                "ParkAndDeferUploadsInTheBacklog",
                ["sqs:SendMessage", "sqs:ChangeMessageVisibility"],
                [backlog_queue_arn],
            ),
            # What the event source mapping does with the function's role.
            allow(
                "ReadTheBacklog",
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                [backlog_queue_arn],
            ),
            *cap,
        ]
    )


class TaskRunner(pulumi.ComponentResource):
    function: aws.lambda_.Function
    dead_letter_queue: aws.sqs.Queue
    backlog_queue: aws.sqs.Queue
    state_table: aws.dynamodb.Table | None
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
        bucket: UploadSource,
        target: JobTarget,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("s3fargatejobs:index:TaskRunner", name, None, opts)
        tags = dict(settings.tags)

        self.dead_letter_queue = holding_queue(
            f"{name}-dlq", tags, pulumi.ResourceOptions(parent=self, protect=settings.protect)
        )
        self.backlog_queue = backlog_queue(
            f"{name}-backlog",
            visibility_timeout_seconds=BACKLOG_VISIBILITY_SECONDS,
            dead_letter_queue=self.dead_letter_queue,
            max_receive_count=BACKLOG_MAX_RECEIVES,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=settings.protect),
        )
        self.state_table = (
            aws.dynamodb.Table(
                f"{name}-state",
                billing_mode="PAY_PER_REQUEST",
                hash_key=STATE_TABLE_KEY,
                attributes=[aws.dynamodb.TableAttributeArgs(name=STATE_TABLE_KEY, type="S")],
                ttl=aws.dynamodb.TableTtlArgs(
                    attribute_name=STATE_TABLE_TTL_ATTRIBUTE, enabled=True
                ),
                # Encrypted at rest with an AWS owned key, as every table is; its items (a lock,
                # clientTokens, task ARNs) are no secret and a week old at most.
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            if settings.max_concurrent_tasks
            else None
        )
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/{settings.name_prefix}/runner",
            retention_in_days=settings.log_retention_days,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        role, permissions = role_with_policy(
            f"{name}-role",
            description="The runner Lambda: start the job's Fargate tasks, nothing else",
            trust_policy=service_trust_policy("lambda.amazonaws.com"),
            policy=runner_policy(
                settings,
                context,
                target,
                log_group_arn=self.log_group.arn,
                dead_letter_queue_arn=self.dead_letter_queue.arn,
                backlog_queue_arn=self.backlog_queue.arn,
                state_table_arn=self.state_table.arn if self.state_table is not None else None,
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
                    "BACKLOG_QUEUE_URL": self.backlog_queue.url,
                    "DEAD_LETTER_QUEUE_URL": self.dead_letter_queue.url,
                    "MAX_CONCURRENT_TASKS": str(settings.max_concurrent_tasks),
                    **(
                        {"STATE_TABLE": self.state_table.name}
                        if self.state_table is not None
                        else {}
                    ),
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
        # The mapping checks at creation that the role may read the queue.
        aws.lambda_.EventSourceMapping(
            f"{name}-backlog",
            event_source_arn=self.backlog_queue.arn,
            function_name=self.function.arn,
            batch_size=BACKLOG_BATCH_SIZE,
            maximum_batching_window_in_seconds=BACKLOG_BATCHING_WINDOW_SECONDS,
            function_response_types=["ReportBatchItemFailures"],
            scaling_config=aws.lambda_.EventSourceMappingScalingConfigArgs(
                maximum_concurrency=BACKLOG_MAXIMUM_CONCURRENCY
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permissions]),
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
        # The only notification configuration of the bucket (a second one would replace it):
        # the trigger, and whatever else an existing bucket notified, kept as it was, its
        # EventBridge delivery included (the provider writes false unless told).
        # S3 validates the destination when it is set, so the permission must exist first.
        others = bucket.other_notifications
        self.notification = aws.s3.BucketNotification(
            f"{name}-trigger",
            bucket=bucket.name,
            lambda_functions=[
                *(
                    aws.s3.BucketNotificationLambdaFunctionArgs(
                        lambda_function_arn=self.function.arn,
                        events=["s3:ObjectCreated:*"],
                        filter_prefix=settings.upload_prefix or None,
                        filter_suffix=suffix,
                    )
                    for suffix in (settings.upload_suffixes or (None,))
                ),
                *others.lambda_functions,
            ],
            queues=list(others.queues) or None,
            topics=list(others.topics) or None,
            eventbridge=others.eventbridge,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.permission, *bucket.configured],
                # Deleting writes an empty configuration, the other targets' too.
                retain_on_delete=others.retain_on_delete,
            ),
        )
        self.register_outputs(
            {
                "functionName": self.function.name,
                "deadLetterQueueUrl": self.dead_letter_queue.url,
                "backlogQueueUrl": self.backlog_queue.url,
            }
        )
