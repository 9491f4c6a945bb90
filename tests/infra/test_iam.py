"""Least privilege, checked on every policy the program renders for every stack."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from infra.policies import WILDCARD_RESOURCE_CONDITIONS, WILDCARD_RESOURCE_EXCEPTIONS
from jobctl.evaluate import Evaluation
from tests.infra.conftest import as_json

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament still imports pkg_resources
    from parliament import analyze_policy_string

# What parliament's database cannot know: the actions AWS authorises only on "*".
AUDITORS = Path(__file__).parent / "parliament_auditors"


def identity_policies(stack: Evaluation) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.name, as_json(r.inputs["policy"]))
        for r in stack.of_type("aws:iam/rolePolicy:RolePolicy")
    ]


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy["Statement"]
    return found if isinstance(found, list) else [found]


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_every_role_has_an_inline_policy_and_no_managed_admin_policy(stack: Evaluation) -> None:
    roles = stack.of_type("aws:iam/role:Role")
    assert len(roles) == 3
    assert len(identity_policies(stack)) == len(roles)
    assert not stack.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    for role in roles:
        assert not role.inputs.get("managedPolicyArns"), role.name


def parliament_findings(policy: dict[str, Any]) -> list[Any]:
    return list(
        analyze_policy_string(json.dumps(policy), private_auditors_custom_path=AUDITORS).findings
    )


def test_parliament_finds_nothing_in_any_identity_policy(stack: Evaluation) -> None:
    for name, policy in identity_policies(stack):
        findings = parliament_findings(policy)
        unexpected = [
            (f.issue, f.detail)
            for f in findings
            # RESOURCE_STAR for the documented exceptions is asserted on below.
            if not (
                f.issue == "RESOURCE_STAR" and set(f.detail) <= set(WILDCARD_RESOURCE_EXCEPTIONS)
            )
        ]
        assert unexpected == [], name


def test_no_action_is_a_wildcard(stack: Evaluation) -> None:
    for name, policy in identity_policies(stack):
        for statement in statements(policy):
            for action in listed(statement["Action"]):
                assert "*" not in action, f"{name}: {action}"


def test_only_the_listed_exceptions_use_a_star_resource_each_with_its_condition(
    stack: Evaluation,
) -> None:
    for name, policy in identity_policies(stack):
        for statement in statements(policy):
            if "*" in listed(statement["Resource"]):
                assert listed(statement["Resource"]) == ["*"]
                actions = set(listed(statement["Action"]))
                assert actions <= set(WILDCARD_RESOURCE_EXCEPTIONS), name
                conditioned = {
                    key for keys in statement.get("Condition", {}).values() for key in keys
                }
                for action in actions & set(WILDCARD_RESOURCE_CONDITIONS):
                    assert WILDCARD_RESOURCE_CONDITIONS[action] in conditioned, f"{name}: {action}"


def list_tasks_grant(stack: Evaluation, resource: str) -> dict[str, Any]:
    cluster = stack.one("aws:ecs/cluster:Cluster").outputs["arn"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CountTheJobsTasksForTheCap",
                "Effect": "Allow",
                "Action": ["ecs:ListTasks"],
                "Resource": [resource],
                "Condition": {"ArnEquals": {"ecs:cluster": cluster}},
            }
        ],
    }


def test_the_runner_cannot_list_tasks_it_reads_them_from_its_job_table(stack: Evaluation) -> None:
    # The cap once counted tasks with a cluster-wide ListTasks, which AWS authorises only on "*".
    # The job table now knows which tasks are the job's: no policy may list, so no "*" stays.
    for name, policy in identity_policies(stack):
        for statement in statements(policy):
            assert "ecs:ListTasks" not in listed(statement["Action"]), name
    runner = statements(policy_named(stack, "-runner-role"))
    assert [s["Sid"] for s in runner if "*" in listed(s["Resource"])] == []


def runner_statements(stack: Evaluation) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements(policy_named(stack, "-runner-role"))}


def test_the_sweep_may_describe_and_stop_only_this_clusters_tasks(stack: Evaluation) -> None:
    cluster = stack.one("aws:ecs/cluster:Cluster").outputs
    tasks = f"arn:aws:ecs:us-east-1:123456789012:task/{cluster['name']}/*"
    granted = {
        action: (listed(s["Resource"]), s.get("Condition"))
        for s in statements(policy_named(stack, "-runner-role"))
        for action in listed(s["Action"])
        if action in ("ecs:DescribeTasks", "ecs:StopTask")
    }
    on_this_cluster = {"ArnEquals": {"ecs:cluster": cluster["arn"]}}
    assert granted == {
        "ecs:DescribeTasks": ([tasks], on_this_cluster),
        "ecs:StopTask": ([tasks], on_this_cluster),
    }


def test_the_runner_may_use_its_job_table_and_query_only_the_indexes_it_reads(
    stack: Evaluation,
) -> None:
    table = stack.one("aws:dynamodb/table:Table")
    indexes = [index["name"] for index in table.inputs["globalSecondaryIndexes"]]
    arn = table.outputs["arn"]
    dynamodb = {
        action: listed(s["Resource"])
        for s in statements(policy_named(stack, "-runner-role"))
        for action in listed(s["Action"])
        if action.startswith("dynamodb:")
    }
    # TransactWriteItems has no action of its own: its items are authorised as UpdateItem and
    # PutItem ("Using IAM with DynamoDB transactions"). Nothing deletes, scans or describes;
    # the readers of a key's jobs and of recent ones (jobctl) run with a person's credentials.
    assert dynamodb == {
        "dynamodb:GetItem": [arn],
        "dynamodb:PutItem": [arn],
        "dynamodb:UpdateItem": [arn],
        "dynamodb:Query": [
            f"{arn}/index/waiting",
            f"{arn}/index/delayed",
            f"{arn}/index/sweep",
        ],
    }
    assert sorted(indexes) == ["delayed", "recent", "sweep", "waiting"]


def test_the_runner_sends_failed_jobs_dead_letters_and_parked_uploads_only_to_their_queues(
    stack: Evaluation,
) -> None:
    queue = {
        suffix: stack.named("aws:sqs/queue:Queue", suffix).outputs["arn"]
        for suffix in ("-runner-dlq", "-failed-jobs", "-runner-backlog")
    }
    sends = sorted(
        resource
        for s in statements(policy_named(stack, "-runner-role"))
        if "sqs:SendMessage" in listed(s["Action"])
        for resource in listed(s["Resource"])
    )
    assert sends == sorted(queue.values())
    statements_by_sid = runner_statements(stack)
    assert listed(statements_by_sid["ReportFailedJobs"]["Resource"]) == [queue["-failed-jobs"]]


def test_parliament_refuses_list_tasks_scoped_to_container_instances(prod: Evaluation) -> None:
    cluster_name = prod.one("aws:ecs/cluster:Cluster").outputs["name"]
    scoped = list_tasks_grant(
        prod, f"arn:aws:ecs:us-east-1:123456789012:container-instance/{cluster_name}/*"
    )
    assert [f.issue for f in parliament_findings(scoped)] == ["WILDCARD_EXCEPTION_NOT_ON_STAR"]
    unconditioned = list_tasks_grant(prod, "*")
    del unconditioned["Statement"][0]["Condition"]
    assert "WILDCARD_EXCEPTION_WITHOUT_ITS_CONDITION" in {
        f.issue for f in parliament_findings(unconditioned)
    }


def test_every_trust_policy_names_exactly_one_service(stack: Evaluation) -> None:
    for role in stack.of_type("aws:iam/role:Role"):
        trust = as_json(role.inputs["assumeRolePolicy"])
        (statement,) = statements(trust)
        assert statement["Action"] == "sts:AssumeRole"
        assert list(statement["Principal"]) == ["Service"], role.name
        assert isinstance(statement["Principal"]["Service"], str), role.name


def trust_of(stack: Evaluation, suffix: str) -> dict[str, Any]:
    (role,) = [r for r in stack.of_type("aws:iam/role:Role") if r.name.endswith(suffix)]
    (statement,) = statements(as_json(role.inputs["assumeRolePolicy"]))
    return statement


def test_the_task_role_trusts_ecs_only_for_this_account_and_the_execution_role_as_documented(
    stack: Evaluation,
) -> None:
    task = trust_of(stack, "-job-task")
    assert set(task["Condition"]) == {"ArnLike", "StringEquals"}
    source_arn = task["Condition"]["ArnLike"]["aws:SourceArn"]
    assert source_arn.startswith("arn:aws:ecs:")
    assert source_arn.endswith(":*")
    source_account = task["Condition"]["StringEquals"]["aws:SourceAccount"]
    assert source_arn.split(":")[4] == source_account != ""
    assert "Condition" not in trust_of(stack, "-job-execution")


def policy_named(stack: Evaluation, suffix: str) -> dict[str, Any]:
    (policy,) = [p for name, p in identity_policies(stack) if name.endswith(suffix)]
    return policy


def test_the_task_role_reads_uploads_and_writes_results_and_nothing_more(
    stack: Evaluation,
) -> None:
    bucket_arn = stack.one("aws:s3/bucket:Bucket").outputs["arn"]
    upload = stack.config["s3-fargate-jobs:uploadPrefix"]
    result = stack.config["s3-fargate-jobs:resultPrefix"]
    granted = {
        (tuple(sorted(listed(s["Action"]))), tuple(listed(s["Resource"])))
        for s in statements(policy_named(stack, "-job-task"))
    }
    assert granted == {
        (("s3:GetObject", "s3:GetObjectVersion"), (f"{bucket_arn}/{upload}*",)),
        (("s3:PutObject",), (f"{bucket_arn}/{result}*",)),
    }


def test_the_execution_role_pulls_only_this_repository_and_writes_only_its_log_group(
    stack: Evaluation,
) -> None:
    repository = stack.one("aws:ecr/repository:Repository").outputs["arn"]
    jobs_log_group = next(
        g.outputs["arn"]
        for g in stack.of_type("aws:cloudwatch/logGroup:LogGroup")
        if g.outputs["name"].endswith("/jobs")
    )
    policy = statements(policy_named(stack, "-job-execution"))
    resources = {r for s in policy for r in listed(s["Resource"])}
    assert resources == {repository, "*", jobs_log_group, jobs_log_group + ":log-stream:*"}


def test_the_runner_may_run_only_this_family_on_this_cluster_and_pass_only_the_job_roles(
    stack: Evaluation,
) -> None:
    policy = {s["Sid"]: s for s in statements(policy_named(stack, "-runner-role"))}
    run = policy["RunTheJobOnThisClusterOnly"]
    family = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs["family"]
    assert listed(run["Resource"]) == [
        f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:*"
    ]
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": stack.outputs["clusterArn"]}}

    task = stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    passed = policy["PassTheJobRolesToEcsOnly"]
    assert sorted(listed(passed["Resource"])) == sorted(
        [task["executionRoleArn"], task["taskRoleArn"]]
    )
    assert passed["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    dlq = stack.named("aws:sqs/queue:Queue", "-runner-dlq").outputs["arn"]
    assert listed(policy["SendFailedEventsToDeadLetterQueue"]["Resource"]) == [dlq]


@pytest.mark.parametrize("action", sorted(WILDCARD_RESOURCE_EXCEPTIONS))
def test_each_wildcard_exception_states_its_reason(action: str) -> None:
    assert len(WILDCARD_RESOURCE_EXCEPTIONS[action]) > 20


def test_the_runner_may_tag_only_the_tasks_it_starts_as_run_task_propagates_tags(
    stack: Evaluation,
) -> None:
    # propagateTags makes RunTask tag the task, which ECS authorises as ecs:TagResource with
    # ecs:CreateAction (ECS guide, "Grant permission to tag resources on creation"): without it
    # every RunTask fails AccessDenied.
    policy = {s["Sid"]: s for s in statements(policy_named(stack, "-runner-role"))}
    tag = policy["TagTasksItStarts"]
    assert listed(tag["Action"]) == ["ecs:TagResource"]
    assert tag["Condition"] == {"StringEquals": {"ecs:CreateAction": "RunTask"}}
    cluster_name = stack.one("aws:ecs/cluster:Cluster").outputs["name"]
    assert listed(tag["Resource"]) == [f"arn:aws:ecs:us-east-1:123456789012:task/{cluster_name}/*"]
