"""Failed jobs are told to a person: a failed-jobs queue fed by ECS stop events, and alarms."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from .aws_context import AwsContext
from .config import Settings
from .job import CONTAINER_NAME, LOG_STREAM_PREFIX
from .queues import holding_queue

SUCCESSFUL_STOP = "EssentialContainerExited"
LOG_STREAM_TASK_ID = "{task id}"
# The runner reports how long the oldest upload it defers has waited, as an embedded-metric log
# line (taskrunner/backlog.py writes the same names). It is emitted only when the runner runs
# and defers, so SQS's own ApproximateAgeOfOldestMessage is watched beside it: that one is exact
# precisely when nothing receives, but skips a message received three times or more (as a
# waiting upload is, at every retry), where the runner's metric is exact.
BACKLOG_METRIC_NAMESPACE = "S3FargateJobs"
BACKLOG_WAIT_METRIC = "OldestWaitSeconds"
BACKLOG_DIMENSION = "Backlog"
# A waiting upload is seen at least once an hour (the runner's longest delay): the alarm looks
# at the last hour, in 5-minute periods, and fires on the first one above the age.
BACKLOG_ALARM_PERIOD_SECONDS = 300
BACKLOG_ALARM_PERIODS = 12


@dataclass(frozen=True)
class WaitMetric:
    """A metric saying, in seconds, how long the oldest upload still waiting has waited."""

    query_id: str  # its name in the alarm's expression: a lowercase letter first
    namespace: str
    metric: str
    dimensions: Mapping[str, pulumi.Input[str]]


def backlog_wait_metrics(backlog_queue_name: pulumi.Input[str]) -> list[WaitMetric]:
    """Every source of the backlog's age. The alarm fires on the largest, so another source
    (a job table, say) is one more entry here."""
    return [
        # SQS's own: published while the queue holds messages, whether anything consumes them.
        WaitMetric(
            "queue", "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": backlog_queue_name}
        ),
        # The runner's: counts every wait, retries included, but only while the runner runs.
        WaitMetric(
            "runner",
            BACKLOG_METRIC_NAMESPACE,
            BACKLOG_WAIT_METRIC,
            {BACKLOG_DIMENSION: backlog_queue_name},
        ),
    ]


def oldest_wait_expression(metrics: Sequence[WaitMetric]) -> str:
    """The largest age any source reports; a source without data in a period counts as 0, so
    a silent runner cannot hide what SQS sees (and the other way round)."""
    return "MAX([" + ", ".join(f"FILL({m.query_id}, 0)" for m in metrics) + "])"


def failed_task_pattern(cluster_arn: str, task_family_arn_prefix: str) -> str:
    """ECS "Task State Change" to STOPPED for this cluster and family, unless it succeeded.

    A task succeeded only when its essential container exited 0. Everything else is a failure a
    person must hear about: a non-zero exit (including 137 for out-of-memory and the job's own
    timeout), or a stop for another reason (image pull failure -> TaskFailedToStart, Spot
    interruption -> SpotInterruption, StopTask -> UserInitiated, ...).
    """
    return json.dumps(
        {
            "source": ["aws.ecs"],
            "detail-type": ["ECS Task State Change"],
            "detail": {
                "clusterArn": [cluster_arn],
                "lastStatus": ["STOPPED"],
                "taskDefinitionArn": [{"prefix": task_family_arn_prefix}],
                "$or": [
                    {"stopCode": [{"anything-but": SUCCESSFUL_STOP}]},
                    {"containers": {"exitCode": [{"anything-but": 0}]}},
                ],
            },
        }
    )


def failed_job_message(log_group_name: str) -> str:
    """The message template: what failed, why, and where to look (EventBridge placeholders).

    Each placeholder is a whole JSON value, never inside quotes: there EventBridge inserts the
    value as JSON (a string quoted and escaped, a path the event lacks as ""), whereas inside
    quotes it pastes the text unescaped, and a stop reason quoting a URL (as image pull errors
    do) would make the message invalid JSON that no redrive can read.
    """
    return (
        "{"
        '"summary": "A Fargate job stopped without success",'
        '"taskArn": <taskArn>,'
        '"stopCode": <stopCode>,'
        '"stoppedReason": <stoppedReason>,'
        '"exitCode": <exitCode>,'
        '"containerReason": <containerReason>,'
        '"stoppedAt": <stoppedAt>,'
        # The upload (S3_BUCKET, S3_KEY, S3_VERSION_ID) as the runner passed it.
        '"environment": <environment>,'
        f'"logGroup": {json.dumps(log_group_name)},'
        # EventBridge cannot cut the id out of the ARN; "{task id}" marks where it goes (angle
        # brackets would be read as a placeholder). `jobctl redrive --dry-run` fills it in.
        f'"logStream": "{LOG_STREAM_PREFIX}/{CONTAINER_NAME}/{LOG_STREAM_TASK_ID}",'
        '"replay": "python -m jobctl redrive --stack <stack>"'
        "}"
    )


FAILED_JOB_PATHS = {
    "taskArn": "$.detail.taskArn",
    "stopCode": "$.detail.stopCode",
    "stoppedReason": "$.detail.stoppedReason",
    "exitCode": "$.detail.containers[0].exitCode",
    "containerReason": "$.detail.containers[0].reason",
    "stoppedAt": "$.detail.stoppedAt",
    "environment": "$.detail.overrides.containerOverrides[0].environment",
}


class FailureMonitoring(pulumi.ComponentResource):
    failed_jobs_queue: aws.sqs.Queue
    alert_topic: aws.sns.Topic

    def __init__(
        self,
        name: str,
        settings: Settings,
        context: AwsContext,
        *,
        cluster_arn: pulumi.Input[str],
        runner_function_name: pulumi.Input[str],
        runner_dead_letter_queue: aws.sqs.Queue,
        backlog_queue: aws.sqs.Queue,
        job_log_group_name: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("s3fargatejobs:index:FailureMonitoring", name, None, opts)
        tags = dict(settings.tags)
        child = pulumi.ResourceOptions(parent=self)

        self.failed_jobs_queue = holding_queue(
            f"{name}-failed-jobs",
            tags,
            pulumi.ResourceOptions(parent=self, protect=settings.protect),
        )
        # Events EventBridge could not deliver to the failed-jobs queue land here.
        undeliverable = holding_queue(f"{name}-undeliverable", tags, child)
        rule = aws.cloudwatch.EventRule(
            f"{name}-failed-tasks",
            description="Jobs that stopped without their essential container exiting 0",
            event_pattern=pulumi.Output.all(cluster_arn, context.arn("ecs", "")).apply(
                lambda args: failed_task_pattern(
                    args[0], f"{args[1]}task-definition/{settings.task_family}:"
                )
            ),
            tags=tags,
            opts=child,
        )
        for queue, label in (
            (self.failed_jobs_queue, "failed-jobs"),
            (undeliverable, "undeliverable"),
        ):
            aws.sqs.QueuePolicy(
                f"{name}-{label}-from-eventbridge",
                queue_url=queue.url,
                policy=pulumi.Output.json_dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "FromTheFailedTasksRuleOnly",
                                "Effect": "Allow",
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": queue.arn,
                                "Condition": {"ArnEquals": {"aws:SourceArn": rule.arn}},
                            }
                        ],
                    }
                ),
                opts=child,
            )
        aws.cloudwatch.EventTarget(
            f"{name}-failed-tasks",
            rule=rule.name,
            arn=self.failed_jobs_queue.arn,
            input_transformer=aws.cloudwatch.EventTargetInputTransformerArgs(
                input_paths=FAILED_JOB_PATHS,
                input_template=pulumi.Output.from_input(job_log_group_name).apply(
                    lambda group: failed_job_message(group).replace("<stack>", settings.stack)
                ),
            ),
            dead_letter_config=aws.cloudwatch.EventTargetDeadLetterConfigArgs(
                arn=undeliverable.arn
            ),
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_event_age_in_seconds=24 * 3600, maximum_retry_attempts=185
            ),
            opts=child,
        )

        key = aws.kms.Key(
            f"{name}-alerts",
            description="Encrypts the alert topic; CloudWatch alarms may publish through it",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            policy=alert_key_policy(context),
            tags=tags,
            opts=child,
        )
        self.alert_topic = aws.sns.Topic(
            f"{name}-alerts", kms_master_key_id=key.arn, tags=tags, opts=child
        )
        if settings.alert_email:
            aws.sns.TopicSubscription(
                f"{name}-alert-email",
                topic=self.alert_topic.arn,
                protocol="email",
                endpoint=settings.alert_email,
                opts=child,
            )

        queues = {
            "runner_dlq": runner_dead_letter_queue.name,
            "failed_jobs": self.failed_jobs_queue.name,
            "undeliverable": undeliverable.name,
        }

        def alarm_when_any(
            suffix: str,
            description: str,
            label: str,
            metrics: dict[str, tuple[str, str, dict[str, pulumi.Input[str]], str]],
        ) -> None:
            """An alarm as soon as the sum of `metrics` is above zero for one minute."""
            aws.cloudwatch.MetricAlarm(
                f"{name}-{suffix}",
                alarm_description=description,
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                evaluation_periods=1,
                treat_missing_data="notBreaching",
                metric_queries=[
                    *(_metric(query_id, *metric) for query_id, metric in metrics.items()),
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="total", expression=" + ".join(metrics), label=label, return_data=True
                    ),
                ],
                alarm_actions=[self.alert_topic.arn],
                tags=tags,
                opts=child,
            )

        alarm_when_any(
            "work-waiting",
            "Uploads wait for a person: the runner's dead-letter queue or the failed-jobs queue "
            "holds messages. Inspect and replay with `python -m jobctl redrive`.",
            "Messages waiting",
            {
                query_id: (
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    {"QueueName": queue},
                    "Maximum",
                )
                for query_id, queue in queues.items()
            },
        )
        function = {"FunctionName": runner_function_name}
        alarm_when_any(
            "runner-failing",
            "The runner Lambda reports errors or throttles: uploads are being retried and may "
            "reach the dead-letter queue; or an event that failed every retry could not be put "
            "in the dead-letter queue and is lost. Check its log group.",
            "Errors, throttles and lost events",
            {
                "errors": ("AWS/Lambda", "Errors", function, "Sum"),
                "throttles": ("AWS/Lambda", "Throttles", function, "Sum"),
                # Lambda's only trace of an on-failure record it could not deliver (permissions,
                # size): the upload is then gone ("Capturing records of asynchronous invocations").
                "undelivered": ("AWS/Lambda", "DestinationDeliveryFailures", function, "Sum"),
            },
        )
        backlog_age_alarm(
            f"{name}-backlog-age",
            settings.backlog_age_alarm_minutes,
            backlog_wait_metrics(backlog_queue.name),
            topic_arn=self.alert_topic.arn,
            tags=tags,
            opts=child,
        )
        self.register_outputs(
            {
                "failedJobsQueueUrl": self.failed_jobs_queue.url,
                "alertTopicArn": self.alert_topic.arn,
            }
        )


def backlog_age_alarm(
    name: str,
    minutes: int,
    metrics: Sequence[WaitMetric],
    *,
    topic_arn: pulumi.Input[str],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.cloudwatch.MetricAlarm:
    """An alarm when the oldest waiting upload, by the largest of `metrics`, has waited more
    than `minutes`; and word again when the backlog is back under that age."""
    return aws.cloudwatch.MetricAlarm(
        name,
        alarm_description=(
            f"An upload has waited more than {minutes} minutes in the backlog: a batch is bigger "
            "than the account's Fargate quota or maxConcurrentTasks lets run at once, and it "
            "drains by itself (`python -m jobctl status` shows how far it has come); or nothing "
            "consumes the backlog: check the runner's errors and its event source mapping."
        ),
        metric_queries=[
            *(
                _metric(
                    m.query_id,
                    m.namespace,
                    m.metric,
                    m.dimensions,
                    "Maximum",
                    period=BACKLOG_ALARM_PERIOD_SECONDS,
                )
                for m in metrics
            ),
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="oldest",
                expression=oldest_wait_expression(metrics),
                label="Oldest upload's wait (s)",
                return_data=True,
            ),
        ],
        evaluation_periods=BACKLOG_ALARM_PERIODS,
        datapoints_to_alarm=1,
        comparison_operator="GreaterThanThreshold",
        threshold=minutes * 60,
        treat_missing_data="notBreaching",
        alarm_actions=[topic_arn],
        ok_actions=[topic_arn],
        tags=tags,
        opts=opts,
    )


def _metric(
    query_id: str,
    namespace: str,
    metric: str,
    dimensions: Mapping[str, pulumi.Input[str]],
    statistic: str,
    *,
    period: int = 60,
) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
    return aws.cloudwatch.MetricAlarmMetricQueryArgs(
        id=query_id,
        return_data=False,
        metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
            namespace=namespace,
            metric_name=metric,
            dimensions=dict(dimensions),
            period=period,
            stat=statistic,
        ),
    )


def alert_key_policy(context: AwsContext) -> pulumi.Output[str]:
    # A key policy's Resource "*" means "this key": AWS accepts nothing else there.
    statements: list[dict[str, Any]] = [
        {
            "Sid": "AccountAdministersTheKeyThroughIam",
            "Effect": "Allow",
            "Principal": {
                "AWS": pulumi.Output.concat(
                    "arn:", context.partition, ":iam::", context.account_id, ":root"
                )
            },
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "CloudWatchAlarmsPublishToTheTopic",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": context.account_id}},
        },
    ]
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})
