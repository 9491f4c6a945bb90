"""What drives the scheduler besides uploads: ECS's task-stop events and the sweep's schedule.

Both reach the runner through EventBridge, which invokes it asynchronously: a stop frees a slot
and ends an attempt, so the oldest waiting jobs start within seconds; the sweep, once a minute,
covers what events cannot (a lost event, a passing capacity shortage, a raised cap, a task past
its time limit). EventBridge retries a delivery it could not make, then puts the event in the
dead-letter queue it is given, so that no undelivered event goes unseen.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from .aws_context import AwsContext
from .config import Settings

# The sweep's cadence, the shortest EventBridge schedules: the runner recognises its events by
# their detail-type, "Scheduled Event" (taskrunner/sweep.py).
SWEEP_SCHEDULE = "rate(1 minute)"
# A task's stop is retried for as long as EventBridge allows (RetryPolicy: 24 h, 185 attempts):
# a stop that never arrives leaves its slot to the sweep, which finds it a minute later at best.
STOP_EVENT_RETRY = aws.cloudwatch.EventTargetRetryPolicyArgs(
    maximum_event_age_in_seconds=24 * 3600, maximum_retry_attempts=185
)
# A sweep is worth delivering only until the next one is due: older, it would only repeat it.
SWEEP_EVENT_RETRY = aws.cloudwatch.EventTargetRetryPolicyArgs(
    maximum_event_age_in_seconds=60, maximum_retry_attempts=185
)


def task_stopped_pattern(cluster_arn: str, family_arn_prefix: str) -> dict[str, Any]:
    """ECS "Task State Change" to STOPPED for this cluster's tasks of the job's family: each
    frees a slot and ends an attempt, whatever its outcome."""
    return {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {
            "clusterArn": [cluster_arn],
            "lastStatus": ["STOPPED"],
            "taskDefinitionArn": [{"prefix": family_arn_prefix}],
        },
    }


class JobScheduling(pulumi.ComponentResource):
    """Two EventBridge rules invoking the runner: a task of the job stopped, and the sweep."""

    task_stopped_rule: aws.cloudwatch.EventRule
    sweep_rule: aws.cloudwatch.EventRule

    def __init__(
        self,
        name: str,
        settings: Settings,
        context: AwsContext,
        *,
        cluster_arn: pulumi.Input[str],
        runner: aws.lambda_.Function,
        undeliverable_queue: aws.sqs.Queue,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("s3fargatejobs:index:JobScheduling", name, None, opts)
        tags = dict(settings.tags)
        family_prefix = context.arn("ecs", f"task-definition/{settings.task_family}:")

        self.task_stopped_rule = aws.cloudwatch.EventRule(
            f"{name}-task-stopped",
            description="A task of the job stopped: the runner settles its attempt, fills slots",
            event_pattern=pulumi.Output.all(cluster_arn, family_prefix).apply(
                lambda args: json.dumps(task_stopped_pattern(args[0], args[1]))
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.sweep_rule = aws.cloudwatch.EventRule(
            f"{name}-sweep",
            description="The runner's sweep: what no event said, and the minute's metrics",
            schedule_expression=SWEEP_SCHEDULE,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        for rule, label, retry in (
            (self.task_stopped_rule, "task-stopped", STOP_EVENT_RETRY),
            (self.sweep_rule, "sweep", SWEEP_EVENT_RETRY),
        ):
            # Only this rule may invoke the runner for EventBridge; the rule's ARN names the
            # account, so no source_account is needed beside it.
            permission = aws.lambda_.Permission(
                f"{name}-{label}-invoke",
                action="lambda:InvokeFunction",
                function=runner.name,
                principal="events.amazonaws.com",
                source_arn=rule.arn,
                opts=pulumi.ResourceOptions(parent=self),
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{label}",
                rule=rule.name,
                arn=runner.arn,
                retry_policy=retry,
                dead_letter_config=aws.cloudwatch.EventTargetDeadLetterConfigArgs(
                    arn=undeliverable_queue.arn
                ),
                # Invocations before the permission exists would fail and wait for a retry.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
            )
        self.register_outputs(
            {
                "taskStoppedRuleArn": self.task_stopped_rule.arn,
                "sweepRuleArn": self.sweep_rule.arn,
            }
        )

    @property
    def rule_arns(self) -> Sequence[pulumi.Output[str]]:
        """The rules that may put undelivered events in the dead-letter queue."""
        return [self.task_stopped_rule.arn, self.sweep_rule.arn]
