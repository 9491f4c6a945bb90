"""The runner: a Lambda that keeps a job per upload in the job table and starts its tasks.

S3 invokes it for each upload; it records the job and starts a task when a slot is free. Jobs
that cannot start now wait in the table, oldest first, and start when a task stops (ECS's events,
infra/scheduling.py) or at the sweep, once a minute. An upload the table could not take waits in
the backlog queue, which the same Lambda consumes through an event source mapping. Every upload
ends as a finished job, a failed one reported to the failed-jobs queue, or a message in the
dead-letter queue: nothing is dropped silently.
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
from .job_table import JobTableSchema, job_table, read_job_table_schema
from .policies import (
    allow,
    log_group_resources,
    policy_document,
    role_with_policy,
    service_trust_policy,
)
from .queues import backlog_queue, holding_queue
from .runner_package import package_files

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
    log_group_name: pulumi.Input[str]  # the job's, for the log commands in the runner's reports


def function_code(source_dir: Path) -> pulumi.AssetArchive:
    """The runtime modules, with their bytecode for the runtime's Python (infra/runner_package)."""
    files, without_bytecode = package_files(source_dir, RUNTIME)
    if without_bytecode is not None:
        pulumi.log.info(without_bytecode)
    return pulumi.AssetArchive({name: pulumi.FileAsset(str(path)) for name, path in files.items()})


@dataclass(frozen=True)
class RunnerResources:
    """What the runner reads and writes besides ECS: its log group, queues and job table."""

    log_group_arn: pulumi.Input[str]
    dead_letter_queue_arn: pulumi.Input[str]
    backlog_queue_arn: pulumi.Input[str]
    failed_jobs_queue_arn: pulumi.Input[str]
    job_table_arn: pulumi.Input[str]
    job_table_indexes: Sequence[str]


def runner_policy(
    settings: Settings, context: AwsContext, target: JobTarget, resources: RunnerResources
) -> pulumi.Output[str]:
    cluster_tasks = context.arn("ecs", pulumi.Output.concat("task/", target.cluster_name, "/*"))
    on_this_cluster = {"ArnEquals": {"ecs:cluster": target.cluster_arn}}
    table = pulumi.Output.from_input(resources.job_table_arn)
    return policy_document(
        [
            # Scoped to the family, any revision: since 2024 RunTask without a revision is
            # authorised against the latest one.
            allow(
                "RunTheJobOnThisClusterOnly",
                ["ecs:RunTask"],
                [context.arn("ecs", f"task-definition/{settings.task_family}:*")],
                condition=on_this_cluster,
            ),
            # propagateTags makes RunTask tag the new task, which ECS authorises separately.
            allow(
                "TagTasksItStarts",
                ["ecs:TagResource"],
                [cluster_tasks],
                condition={"StringEquals": {"ecs:CreateAction": "RunTask"}},
            ),
            allow(
                "PassTheJobRolesToEcsOnly",
                ["iam:PassRole"],
                list(target.role_arns),
                condition={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            ),
            # The sweep asks after the tasks under way (a stop whose event was lost) and stops
            # those past taskTimeoutMinutes. The "*" is the task id, which ECS picks at RunTask:
            # only the cluster can be named. No ListTasks: the job table knows the job's tasks.
            allow(
                "SweepAsksAfterTheJobsTasks",
                ["ecs:DescribeTasks"],
                [cluster_tasks],
                condition=on_this_cluster,
            ),
            allow(
                "SweepStopsTasksPastTheirTimeLimit",
                ["ecs:StopTask"],
                [cluster_tasks],
                condition=on_this_cluster,
            ),
            # A transaction (TransactWriteItems, the job and the slot count together) is
            # authorised as the UpdateItem and PutItem of its items: there is no action of its
            # own (DynamoDB developer guide, "Using IAM with DynamoDB transactions").
            allow(
                "KeepTheJobRecords",
                ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                [table],
            ),
            # The waiting jobs, oldest first, and the tasks under way: the indexes the runner
            # queries (job_store.RUNNER_QUERIES), each by name. jobctl's readers of a key's jobs
            # and of recent ones run with a person's credentials.
            allow(
                "QueryTheWaitingAndTheJobsUnderWay",
                ["dynamodb:Query"],
                [
                    pulumi.Output.concat(table, "/index/", index)
                    for index in resources.job_table_indexes
                ],
            ),
            allow(
                "WriteOwnLogs",
                ["logs:CreateLogStream", "logs:PutLogEvents"],
                log_group_resources(resources.log_group_arn),
            ),
            allow(
                "SendFailedEventsToDeadLetterQueue",
                ["sqs:SendMessage"],
                [resources.dead_letter_queue_arn],
            ),
            # A job that failed for good, once, with every attempt: the runner sends it itself,
            # so that a retried attempt never lands there.
            allow("ReportFailedJobs", ["sqs:SendMessage"], [resources.failed_jobs_queue_arn]),
            allow(
                "ParkAndDeferUploadsInTheBacklog",
                ["sqs:SendMessage", "sqs:ChangeMessageVisibility"],
                [resources.backlog_queue_arn],
            ),
            # What the event source mapping does with the function's role.
            allow(
                "ReadTheBacklog",
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                [resources.backlog_queue_arn],
            ),
        ]
    )


def runner_environment(
    settings: Settings,
    target: JobTarget,
    *,
    backlog_queue_url: pulumi.Input[str],
    dead_letter_queue_url: pulumi.Input[str],
    failed_jobs_queue_url: pulumi.Input[str],
    job_table_name: pulumi.Input[str],
) -> dict[str, pulumi.Input[str]]:
    """The runner's settings, as taskrunner/runner_settings.py reads them."""
    timeout_seconds = (settings.task_timeout_minutes or 0) * 60  # 0: no limit
    environment: dict[str, pulumi.Input[str]] = {
        "CLUSTER_ARN": target.cluster_arn,
        "TASK_DEFINITION_ARN": target.task_definition_arn,
        "CONTAINER_NAME": target.container_name,
        "SUBNETS": pulumi.Output.from_input(target.subnet_ids).apply(",".join),
        "SECURITY_GROUPS": target.security_group_id,
        "ASSIGN_PUBLIC_IP": settings.assign_public_ip,
        "CAPACITY_PROVIDER": settings.capacity_provider,
        "RESULT_PREFIX": settings.result_prefix,
        "BACKLOG_QUEUE_URL": backlog_queue_url,
        "DEAD_LETTER_QUEUE_URL": dead_letter_queue_url,
        "FAILED_JOBS_QUEUE_URL": failed_jobs_queue_url,
        "STATE_TABLE": job_table_name,
        "MAX_CONCURRENT_TASKS": str(settings.max_concurrent_tasks),
        "TASK_TIMEOUT_SECONDS": str(timeout_seconds),
        "TASK_MAX_ATTEMPTS": str(settings.task_max_attempts),
        "TASK_RETRY_TIMEOUTS": "true" if settings.task_retry_timeouts else "false",
        "SPOT_FALLBACK_TO_FARGATE": "true" if settings.spot_fallback_to_on_demand else "false",
        "WAIT_TIMEOUT_SECONDS": str(settings.wait_timeout_minutes * 60),
        "JOB_RECORD_DAYS": str(settings.job_record_days),
        "JOB_LOG_GROUP": target.log_group_name,
    }
    # Unset means none; an empty value is avoided rather than trusted to every tool on the way.
    if settings.task_retry_exit_codes:
        environment["TASK_RETRY_EXIT_CODES"] = ",".join(map(str, settings.task_retry_exit_codes))
    return environment


class TaskRunner(pulumi.ComponentResource):
    function: aws.lambda_.Function
    dead_letter_queue: aws.sqs.Queue
    backlog_queue: aws.sqs.Queue
    # The job records and the scheduler's slot count. Named for what it holds; it replaced the
    # cap's "-state" table (a lock and a ledger, hash key only), which a new key schema could
    # not have kept anyway: DynamoDB cannot change a table's keys in place.
    job_table: aws.dynamodb.Table
    job_table_schema: JobTableSchema
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
        failed_jobs_queue: aws.sqs.Queue,
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
        self.job_table_schema = read_job_table_schema(source_dir)
        self.job_table = job_table(
            f"{name}-jobs",
            self.job_table_schema,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=settings.protect),
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
            description="The runner Lambda: start, watch and stop the job's tasks, nothing else",
            trust_policy=service_trust_policy("lambda.amazonaws.com"),
            policy=runner_policy(
                settings,
                context,
                target,
                RunnerResources(
                    log_group_arn=self.log_group.arn,
                    dead_letter_queue_arn=self.dead_letter_queue.arn,
                    backlog_queue_arn=self.backlog_queue.arn,
                    failed_jobs_queue_arn=failed_jobs_queue.arn,
                    job_table_arn=self.job_table.arn,
                    job_table_indexes=list(self.job_table_schema.runner_queries),
                ),
            ),
            tags=tags,
            parent=self,
        )
        self.function = aws.lambda_.Function(
            name,
            description="One job per object created under the upload prefix, and its tasks",
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=HANDLER,
            code=function_code(source_dir),
            role=role.arn,
            memory_size=MEMORY_MB,
            timeout=TIMEOUT_SECONDS,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables=runner_environment(
                    settings,
                    target,
                    backlog_queue_url=self.backlog_queue.url,
                    dead_letter_queue_url=self.dead_letter_queue.url,
                    failed_jobs_queue_url=failed_jobs_queue.url,
                    job_table_name=self.job_table.name,
                )
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
                "jobTableName": self.job_table.name,
            }
        )
