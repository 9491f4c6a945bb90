"""What drives the scheduler besides uploads: ECS's task-stop events and the sweep's schedule."""

from __future__ import annotations

from typing import Any


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
