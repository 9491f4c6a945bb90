"""Provision the emulator from what the Pulumi program declares for a stack.

Nothing here is a second copy of the infrastructure: the bucket and its notification filter,
the queues, the cluster, the task definition, the job table and the log groups are created from
the offline evaluation's declarations, and the names and ARNs the emulator gives back are
checked against the ones the program derives. The runner gets the environment the program
gives the Lambda; only the network ids are the emulator's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from job_store import INDEX_PROJECTIONS, INDEXES, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

from jobctl.evaluate import PROJECT, DeclaredResource, Evaluation
from jobctl.eventbridge import Rules, runner_rules

# The demo compresses the runner's time: an upload the job table could not take is tried
# again within a second or two, not within minutes, and an interrupted task after a second, not
# 30 (the runner's settings for them).
DEMO_RETRY_SECONDS = {
    "BACKLOG_FIRST_RETRY_SECONDS": "1",
    "BACKLOG_MAX_RETRY_SECONDS": "2",
    "TASK_RETRY_DELAY_SECONDS": "1",
}
TABLE_TYPE = "aws:dynamodb/table:Table"
FUNCTION_TYPE = "aws:lambda/function:Function"


class ProvisionError(Exception):
    """The emulator cannot hold what the program declares, or holds it under other names."""


@dataclass(frozen=True)
class JobTable:
    """The job table to create: its name, its declaration (Pulumi's `aws.dynamodb.Table`
    inputs), and, when the program does not declare it yet, why the demo made one up."""

    name: str
    declaration: Mapping[str, Any]
    stand_in: str | None = None


@dataclass(frozen=True)
class Pipeline:
    """What the emulator holds after provisioning, all of it taken from the program."""

    bucket: str
    upload_prefix: str
    result_prefix: str
    queue_url: str  # where the emulator's S3 events arrive (it cannot invoke a Lambda)
    cluster_arn: str
    task_definition_arn: str
    container_name: str
    runner_env: Mapping[str, str]
    container_env: Mapping[str, str]
    platform: str
    backlog_url: str
    backlog_arn: str
    outputs: Mapping[str, Any]  # the stack's outputs, jobTableName included
    job_table: JobTable
    log_group: str  # the job's log group (awslogs-group), and its streams' prefix
    log_stream_prefix: str
    rules: Rules = field(default_factory=Rules)  # EventBridge's rules invoking the runner
    secret_names: tuple[str, ...] = ()  # the task definition's `secrets`: ECS sets them, not us
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the demo had to fill in


def _declared(evaluation: Evaluation, type_: str) -> dict[str, Any]:
    return dict(evaluation.one(type_).inputs)


def runner_variables(evaluation: Evaluation) -> dict[str, str]:
    """The environment the program gives the runner Lambda."""
    variables = _declared(evaluation, FUNCTION_TYPE)["environment"]["variables"]
    return {str(name): str(value) for name, value in variables.items()}


# --- the job table ----------------------------------------------------------------------------


def runner_table_declaration() -> dict[str, Any]:
    """The job table as the runner's job_store lays it out, in the shape the program declares
    an `aws.dynamodb.Table`: keys pk + sk, an index per job_store.INDEXES, TTL on expiresAt.

    Each index is sharded by a string and sorted by epoch seconds, a number.
    """
    attributes = [{"name": PARTITION_KEY, "type": "S"}, {"name": SORT_KEY, "type": "S"}]
    for hash_key, range_key in INDEXES.values():
        attributes += [{"name": hash_key, "type": "S"}, {"name": range_key, "type": "N"}]
    return {
        "billingMode": "PAY_PER_REQUEST",
        "hashKey": PARTITION_KEY,
        "rangeKey": SORT_KEY,
        "attributes": attributes,
        "globalSecondaryIndexes": [
            {
                "name": name,
                "hashKey": hash_key,
                "rangeKey": range_key,
                "projectionType": INDEX_PROJECTIONS[name],
            }
            for name, (hash_key, range_key) in INDEXES.items()
        ],
        "ttl": {"attributeName": TTL_ATTRIBUTE, "enabled": True},
    }


def _is_job_table(declaration: Mapping[str, Any]) -> bool:
    """A table declared with a sort key or indexes is meant as the job table (and is checked
    as one); one with a hash key only is the cap's lease table from before the job records."""
    return bool(declaration.get("rangeKey") or declaration.get("globalSecondaryIndexes"))


def job_table_of(evaluation: Evaluation) -> JobTable:
    """The job table the program declares: the table STATE_TABLE names (or the only one).

    Until the program declares the job table (issue 20's infrastructure), it declares either no
    table (no cap) or the cap's hash-key-only table; the demo then stands in a table laid out
    as the runner's job_store expects, under the declared name or one derived from the stack.
    """
    tables = evaluation.of_type(TABLE_TYPE)
    named = runner_variables(evaluation).get("STATE_TABLE")
    chosen: DeclaredResource | None = next(
        (table for table in tables if table.outputs.get("name") == named), None
    )
    if chosen is None and len(tables) == 1:
        chosen = tables[0]
    if chosen is not None and _is_job_table(chosen.inputs):
        return JobTable(str(chosen.outputs["name"]), dict(chosen.inputs))
    if chosen is not None:
        return JobTable(
            str(chosen.outputs["name"]),
            runner_table_declaration(),
            stand_in="declared with a hash key only (the cap's table before job records): "
            "made with the runner's keys and indexes",
        )
    return JobTable(
        f"{PROJECT}-{evaluation.stack}-jobs",
        runner_table_declaration(),
        stand_in="not declared by the program yet: made as the runner's job_store lays it out",
    )


def with_job_table(evaluation: Evaluation) -> dict[str, Any]:
    """The stack's outputs, with `jobTableName` as the demo provisions it when the program does
    not export it yet."""
    outputs = dict(evaluation.outputs)
    outputs.setdefault("jobTableName", job_table_of(evaluation).name)
    return outputs


def _index_keys(index: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(hash key, range key) of a declared index, written either way the provider allows."""
    if index.get("keySchemas"):
        keys = {str(k["keyType"]): str(k["attributeName"]) for k in index["keySchemas"]}
        return keys.get("HASH"), keys.get("RANGE")
    return index.get("hashKey"), index.get("rangeKey")


def create_table_request(name: str, declaration: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB's CreateTable parameters for a declared `aws.dynamodb.Table`."""
    key_schema = [{"AttributeName": declaration["hashKey"], "KeyType": "HASH"}]
    if declaration.get("rangeKey"):
        key_schema.append({"AttributeName": declaration["rangeKey"], "KeyType": "RANGE"})
    indexes = []
    for index in declaration.get("globalSecondaryIndexes") or []:
        hash_key, range_key = _index_keys(index)
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key:
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        projection: dict[str, Any] = {"ProjectionType": index["projectionType"]}
        if index.get("nonKeyAttributes"):
            projection["NonKeyAttributes"] = list(index["nonKeyAttributes"])
        indexes.append({"IndexName": index["name"], "KeySchema": schema, "Projection": projection})
    request: dict[str, Any] = {
        "TableName": name,
        # On demand whatever is declared: the emulator has no capacity to provision.
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": key_schema,
        "AttributeDefinitions": [
            {"AttributeName": a["name"], "AttributeType": a["type"]}
            for a in declaration["attributes"]
        ],
    }
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    return request


def job_table_problems(request: Mapping[str, Any]) -> list[str]:
    """What the runner's job_store needs of the table and a CreateTable request lacks."""
    problems = []
    keys = {k["KeyType"]: k["AttributeName"] for k in request["KeySchema"]}
    if keys != {"HASH": PARTITION_KEY, "RANGE": SORT_KEY}:
        problems.append(f"keys {keys}, not hash key {PARTITION_KEY!r} and range key {SORT_KEY!r}")
    declared = {
        index["IndexName"]: tuple(k["AttributeName"] for k in index["KeySchema"])
        for index in request.get("GlobalSecondaryIndexes", [])
    }
    for name, keys_wanted in INDEXES.items():
        if declared.get(name) != keys_wanted:
            found = f"keys {declared[name]}" if name in declared else "no such index"
            problems.append(f"index {name!r} must have keys {keys_wanted} ({found})")
    return problems


def provision_job_table(dynamodb: Any, table: JobTable) -> None:
    """Create the job table as declared, TTL included; refuse one the runner could not use."""
    request = create_table_request(table.name, table.declaration)
    problems = job_table_problems(request)
    if problems:
        raise ProvisionError(
            f"the program's job table {table.name} does not fit the runner "
            f"(taskrunner/job_store.py): {'; '.join(problems)}"
        )
    dynamodb.create_table(**request)
    ttl = table.declaration.get("ttl") or {}
    if ttl.get("enabled") and ttl.get("attributeName"):
        dynamodb.update_time_to_live(
            TableName=table.name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["attributeName"]},
        )


# --- the rest ---------------------------------------------------------------------------------


def _notification_rules(evaluation: Evaluation) -> list[dict[str, Any]]:
    targets = _declared(evaluation, "aws:s3/bucketNotification:BucketNotification")
    return [
        {
            "events": target["events"],
            "rules": [
                {"Name": name, "Value": target[field_name]}
                for name, field_name in (("prefix", "filterPrefix"), ("suffix", "filterSuffix"))
                if target.get(field_name)
            ],
        }
        for target in targets["lambdaFunctions"]
    ]


def _provision_queues(evaluation: Evaluation, sqs: Any) -> tuple[str, str]:
    """Every queue the program declares, named and set up as declared (dead-letter targets
    first); returns the backlog's URL and ARN."""
    declared = sorted(
        evaluation.of_type("aws:sqs/queue:Queue"), key=lambda q: bool(q.inputs.get("redrivePolicy"))
    )
    arns: dict[str, str] = {}  # declared ARN -> the emulator's
    urls: dict[str, tuple[str, str]] = {}
    for queue in declared:
        attributes = {
            "VisibilityTimeout": str(int(queue.inputs.get("visibilityTimeoutSeconds", 30))),
            "MessageRetentionPeriod": str(int(queue.inputs["messageRetentionSeconds"])),
        }
        if queue.inputs.get("redrivePolicy"):
            redrive = json.loads(queue.inputs["redrivePolicy"])
            redrive["deadLetterTargetArn"] = arns[redrive["deadLetterTargetArn"]]
            attributes["RedrivePolicy"] = json.dumps(redrive)
        url = sqs.create_queue(QueueName=queue.outputs["name"], Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        arns[queue.outputs["arn"]] = arn
        urls[queue.name] = (url, arn)
    (backlog,) = (value for name, value in urls.items() if name.endswith("-runner-backlog"))
    return backlog


def _event_queue(evaluation: Evaluation, s3: Any, sqs: Any, bucket: str) -> str:
    """The emulator cannot invoke a Lambda without Docker, so the same notification filter
    delivers to a queue, and the demo hands each event to the real handler."""
    queue_url: str = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue_configurations: list[Any] = [
        {
            "QueueArn": queue_arn,
            "Events": rule["events"],
            **({"Filter": {"Key": {"FilterRules": rule["rules"]}}} if rule["rules"] else {}),
        }
        for rule in _notification_rules(evaluation)
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configurations}
    )
    return queue_url


def _network(ec2: Any, subnet_count: int) -> tuple[list[str], str]:
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # moto builds the task's ENI DNS name and fails without this.
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{index}.0/24")["Subnet"]["SubnetId"]
        for index in range(subnet_count)
    ]
    group = ec2.create_security_group(
        GroupName="tasks", Description="Fargate jobs: no inbound", VpcId=vpc_id
    )["GroupId"]
    return subnets, group


def _task_definition(evaluation: Evaluation, ecs: Any) -> tuple[str, list[dict[str, Any]]]:
    task = _declared(evaluation, "aws:ecs/taskDefinition:TaskDefinition")
    containers: list[dict[str, Any]] = json.loads(task["containerDefinitions"])
    registration: dict[str, Any] = {
        "family": task["family"],
        "containerDefinitions": containers,
        "cpu": task["cpu"],
        "memory": task["memory"],
        "networkMode": task["networkMode"],
        "requiresCompatibilities": task["requiresCompatibilities"],
        "executionRoleArn": task["executionRoleArn"],
        "taskRoleArn": task["taskRoleArn"],
        "runtimePlatform": task["runtimePlatform"],
        "volumes": [{"name": v["name"]} for v in task.get("volumes", [])],
    }
    if task.get("ephemeralStorage"):
        registration["ephemeralStorage"] = {"sizeInGiB": int(task["ephemeralStorage"]["sizeInGib"])}
    arn: str = ecs.register_task_definition(**registration)["taskDefinition"]["taskDefinitionArn"]
    return arn, containers


def _runner_environment(
    evaluation: Evaluation, outputs: Mapping[str, Any], table: JobTable
) -> tuple[dict[str, str], list[str]]:
    """The declared environment, and what the demo fills in where the program does not set it
    yet (the job table, the failed-jobs queue, the job's log group), with a note for each."""
    env = runner_variables(evaluation)
    notes = []
    fills = {
        "STATE_TABLE": table.name,
        "FAILED_JOBS_QUEUE_URL": str(outputs.get("failedJobsQueueUrl", "")),
        "JOB_LOG_GROUP": str(outputs.get("logGroupName", "")),
    }
    for name, value in fills.items():
        if not env.get(name) and value:
            env[name] = value
            notes.append(name)
    return env, notes


def provision(evaluation: Evaluation, scratch_dir: Path) -> Pipeline:
    """Create in the emulator what the program declares, and check the names match."""
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    ecs = boto3.client("ecs")
    outputs = with_job_table(evaluation)
    bucket = outputs["bucketName"]
    s3.create_bucket(Bucket=bucket)
    if evaluation.of_type("aws:s3/bucketVersioning:BucketVersioning"):
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    queue_url = _event_queue(evaluation, s3, sqs, bucket)

    table = job_table_of(evaluation)
    declared_env, filled = _runner_environment(evaluation, outputs, table)
    subnets, group = _network(boto3.client("ec2"), len(declared_env["SUBNETS"].split(",")))
    cluster = evaluation.one("aws:ecs/cluster:Cluster").outputs["name"]
    cluster_arn = ecs.create_cluster(clusterName=cluster)["cluster"]["clusterArn"]
    task_definition_arn, containers = _task_definition(evaluation, ecs)
    for what, declared, actual in (
        ("cluster", outputs["clusterArn"], cluster_arn),
        ("task definition", outputs["taskDefinitionArn"], task_definition_arn),
    ):
        if declared != actual:
            raise ProvisionError(
                f"provisioning: the emulator's {what} is {actual}, but the program declares "
                f"{declared}; the demo would not test what the stack deploys"
            )
    backlog_url, backlog_arn = _provision_queues(evaluation, sqs)
    provision_job_table(boto3.client("dynamodb"), table)
    logs = boto3.client("logs")
    for group_declared in evaluation.of_type("aws:cloudwatch/logGroup:LogGroup"):
        logs.create_log_group(logGroupName=group_declared.inputs["name"])

    # Ids of network resources are the emulator's own; everything else is as declared.
    runner_env = {
        **declared_env,
        "SUBNETS": ",".join(subnets),
        "SECURITY_GROUPS": group,
        **DEMO_RETRY_SECONDS,
    }
    (container,) = containers
    container_env = {e["name"]: e["value"] for e in container.get("environment", [])}
    container_env["TMPDIR"] = str(scratch_dir)  # the writable scratch volume, here a temp dir
    log_options = (container.get("logConfiguration") or {}).get("options") or {}
    notes = []
    if filled:
        notes.append(
            f"the program does not give the runner {', '.join(filled)} yet: the demo sets "
            "them from the outputs"
        )
    return Pipeline(
        bucket=bucket,
        upload_prefix=outputs["uploadPrefix"],
        result_prefix=outputs["resultPrefix"],
        queue_url=queue_url,
        cluster_arn=cluster_arn,
        task_definition_arn=task_definition_arn,
        container_name=container["name"],
        runner_env=runner_env,
        container_env=container_env,
        # The platform the program builds the image for, from the same setting as the task's.
        platform=_declared(evaluation, "docker:index/image:Image")["build"]["platform"],
        backlog_url=backlog_url,
        backlog_arn=backlog_arn,
        outputs=outputs,
        job_table=table,
        log_group=str(log_options.get("awslogs-group") or outputs.get("logGroupName", "")),
        log_stream_prefix=str(log_options.get("awslogs-stream-prefix") or "job"),
        rules=runner_rules(evaluation),
        secret_names=tuple(secret["name"] for secret in container.get("secrets", [])),
        notes=tuple(notes),
    )
