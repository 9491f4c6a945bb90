"""IAM policy documents, rendered with Output.json_dumps (never string concatenation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

Statement = Mapping[str, Any]

# The only actions that may be granted on Resource "*", each because AWS accepts nothing
# narrower. Tests fail on any other "*" resource, so a new exception has to be argued here.
# ecs:ListTasks is granted nowhere since the job table knows the job's tasks; it stays listed
# so that a grant of it, should one return, is made as AWS authorises it (and audited so).
WILDCARD_RESOURCE_EXCEPTIONS: Mapping[str, str] = {
    "ecr:GetAuthorizationToken": (
        "registry tokens are issued per account; the action has no resource type "
        "(Service Authorization Reference, Amazon ECR)"
    ),
    "ecs:ListTasks": (
        "listing a cluster's tasks names no container instance, so IAM authorises it against "
        '"*" and only the ecs:cluster condition can narrow it; scoped to container-instance/'
        "<cluster>/* as the Service Authorization Reference suggests, every call is denied "
        "(ECS developer guide, 'Amazon ECS identity-based policy examples'; "
        "cdklabs/construct-hub#1207; awsdocs/amazon-ecs-developer-guide#211)"
    ),
}

# The condition key each exception must carry, where AWS offers one: on "*" it is the only
# thing that keeps the grant to this stack's resources.
WILDCARD_RESOURCE_CONDITIONS: Mapping[str, str] = {
    "ecs:ListTasks": "ecs:cluster",
}


def policy_document(statements: Sequence[Statement]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[pulumi.Input[str]],
    condition: Mapping[str, Any] | None = None,
) -> Statement:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": list(resources),
    }
    if condition:
        statement["Condition"] = condition
    return statement


def service_trust_policy(
    service: str, condition: Mapping[str, Any] | None = None
) -> pulumi.Output[str]:
    """A trust policy naming exactly one service principal."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if condition:
        statement["Condition"] = condition
    return policy_document([statement])


def log_group_resources(log_group_arn: pulumi.Input[str]) -> list[pulumi.Output[str]]:
    """The log group itself (CreateLogStream) and its streams (PutLogEvents)."""
    return [
        pulumi.Output.from_input(log_group_arn),
        pulumi.Output.concat(log_group_arn, ":log-stream:*"),
    ]


def role_with_policy(
    name: str,
    *,
    description: str,
    trust_policy: pulumi.Input[str],
    policy: pulumi.Input[str],
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
    """A role and its one inline policy: what it may do is readable in one place."""
    role = aws.iam.Role(
        name,
        description=description,
        assume_role_policy=trust_policy,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    permissions = aws.iam.RolePolicy(
        name, role=role.id, policy=policy, opts=pulumi.ResourceOptions(parent=parent)
    )
    return role, permissions
