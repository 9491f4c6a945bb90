"""What `pulumi up` would create, for every committed stack, asserted across resources."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import FARGATE_MEMORY_BY_CPU
from jobctl.evaluate import ACCOUNT_ID, PROJECT_DIR, Evaluation, evaluate
from tests.infra.conftest import as_json

BUCKET = "aws:s3/bucket:Bucket"
FUNCTION = "aws:lambda/function:Function"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
NOTIFICATION = "aws:s3/bucketNotification:BucketNotification"
PERMISSION = "aws:lambda/permission:Permission"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
VPC = "awsx:ec2:Vpc"
TABLE = "aws:dynamodb/table:Table"

CONTRACT_VARIABLES = {
    "CLUSTER_ARN",
    "TASK_DEFINITION_ARN",
    "CONTAINER_NAME",
    "SUBNETS",
    "SECURITY_GROUPS",
    "ASSIGN_PUBLIC_IP",
    "CAPACITY_PROVIDER",
    "RESULT_PREFIX",
    "BACKLOG_QUEUE_URL",
    "DEAD_LETTER_QUEUE_URL",
    "FAILED_JOBS_QUEUE_URL",
    "STATE_TABLE",
    "MAX_CONCURRENT_TASKS",
    "TASK_TIMEOUT_SECONDS",
    "TASK_MAX_ATTEMPTS",
    "TASK_RETRY_TIMEOUTS",
    "SPOT_FALLBACK_TO_FARGATE",
    "WAIT_TIMEOUT_SECONDS",
    "JOB_RECORD_DAYS",
    "JOB_LOG_GROUP",
}


def config(stack: Evaluation, key: str) -> str:
    return stack.config[f"s3-fargate-jobs:{key}"]


def runner_environment(stack: Evaluation) -> dict[str, str]:
    env: dict[str, str] = stack.one(FUNCTION).inputs["environment"]["variables"]
    return env


def container(stack: Evaluation) -> dict[str, Any]:
    definitions = as_json(stack.one(TASK_DEFINITION).inputs["containerDefinitions"])
    assert len(definitions) == 1
    only: dict[str, Any] = definitions[0]
    return only


def test_every_stack_exports_the_documented_outputs(stack: Evaluation) -> None:
    assert set(stack.outputs) == {
        "bucketName",
        "uploadPrefix",
        "resultPrefix",
        "clusterArn",
        "taskDefinitionArn",
        "taskRunnerFunctionName",
        "logGroupName",
        "deadLetterQueueUrl",
        "backlogQueueUrl",
        "maxConcurrentTasks",
        "repositoryUrl",
        "failedJobsQueueUrl",
        "alertTopicArn",
        "jobTableName",
        "dashboardUrl",
    }
    assert stack.outputs["bucketName"] == stack.one(BUCKET).outputs["bucket"]
    assert stack.outputs["uploadPrefix"] == config(stack, "uploadPrefix")
    assert stack.outputs["jobTableName"] == stack.one(TABLE).outputs["name"]


def test_the_notification_waits_for_the_permission_and_filters_on_the_upload_prefix(
    stack: Evaluation,
) -> None:
    notifications = stack.of_type(NOTIFICATION)
    assert len(notifications) == 1, "a second notification would overwrite the first"
    notification = notifications[0]
    permission = stack.named(PERMISSION, "-s3-invoke")
    assert permission.urn in notification.dependencies
    bucket = stack.one(BUCKET)
    assert notification.inputs["bucket"] == bucket.outputs["id"]
    (target,) = notification.inputs["lambdaFunctions"]
    assert target["lambdaFunctionArn"] == stack.one(FUNCTION).outputs["arn"]
    assert target["events"] == ["s3:ObjectCreated:*"]
    assert target["filterPrefix"] == config(stack, "uploadPrefix")


def test_only_s3_from_this_bucket_and_account_may_invoke_the_runner(stack: Evaluation) -> None:
    permission = stack.named(PERMISSION, "-s3-invoke").inputs
    assert permission["principal"] == "s3.amazonaws.com"
    assert permission["action"] == "lambda:InvokeFunction"
    assert permission["sourceArn"] == stack.one(BUCKET).outputs["arn"]
    assert permission["sourceAccount"] == ACCOUNT_ID
    assert permission["function"] == stack.one(FUNCTION).outputs["name"]


def test_the_image_is_built_for_the_platform_the_task_runs_on(stack: Evaluation) -> None:
    image = stack.one("docker:index/image:Image").inputs
    platform = stack.one(TASK_DEFINITION).inputs["runtimePlatform"]
    expected = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}[platform["cpuArchitecture"]]
    assert image["build"]["platform"] == expected
    assert platform["cpuArchitecture"] == config(stack, "cpuArchitecture")
    assert platform["operatingSystemFamily"] == "LINUX"
    assert image["build"]["context"] == "task"


def test_the_task_definition_pins_the_pushed_image_by_digest(stack: Evaluation) -> None:
    image = stack.one("docker:index/image:Image")
    assert "@sha256:" in container(stack)["image"]
    assert container(stack)["image"] == image.outputs["repoDigest"]
    repository = stack.one("aws:ecr/repository:Repository")
    assert image.inputs["registry"]["server"] == repository.outputs["repositoryUrl"]
    assert image.inputs["imageName"].startswith(repository.outputs["repositoryUrl"] + ":")


def test_the_task_definition_has_the_configured_size_logs_and_roles(stack: Evaluation) -> None:
    task = stack.one(TASK_DEFINITION).inputs
    assert int(task["cpu"]) == int(config(stack, "taskCpu"))
    assert int(task["memory"]) == int(config(stack, "taskMemory"))
    assert int(task["memory"]) in FARGATE_MEMORY_BY_CPU[int(task["cpu"])]
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert task["networkMode"] == "awsvpc"

    roles = {r.name: r.outputs["arn"] for r in stack.of_type("aws:iam/role:Role")}
    assert task["executionRoleArn"] != task["taskRoleArn"]
    assert task["executionRoleArn"] in roles.values()
    assert task["taskRoleArn"] in roles.values()

    job = container(stack)
    log_group = next(g for g in stack.of_type(LOG_GROUP) if g.outputs["name"].endswith("/jobs"))
    assert job["logConfiguration"]["logDriver"] == "awslogs"
    assert job["logConfiguration"]["options"]["awslogs-group"] == log_group.outputs["name"]
    assert stack.outputs["logGroupName"] == log_group.outputs["name"]
    assert job["essential"] is True
    assert job["readonlyRootFilesystem"] is True
    assert not job["user"].startswith(("0", "root"))
    scratch = {v["name"] for v in task["volumes"]}
    assert {m["sourceVolume"] for m in job["mountPoints"]} <= scratch
    env = {e["name"]: e["value"] for e in job["environment"]}
    assert env["RESULT_PREFIX"] == config(stack, "resultPrefix")
    assert env["TMPDIR"] in {m["containerPath"] for m in job["mountPoints"]}


# "Amazon ECS task definition differences for Fargate": parameters not valid on Fargate, and
# the Linux parameters it does not support (capabilities may only add CAP_SYS_PTRACE).
NOT_VALID_ON_FARGATE = {
    "disableNetworking",
    "dnsSearchDomains",
    "dnsServers",
    "dockerSecurityOptions",
    "extraHosts",
    "gpu",
    "ipcMode",
    "links",
    "placementConstraints",
    "privileged",
    "maxSwap",
    "swappiness",
}
LINUX_PARAMETERS_NOT_ON_FARGATE = {"devices", "sharedMemorySize", "tmpfs", "maxSwap", "swappiness"}


def test_the_job_uses_no_parameter_fargate_rejects(stack: Evaluation) -> None:
    task = stack.one(TASK_DEFINITION).inputs
    job = container(stack)
    assert not NOT_VALID_ON_FARGATE & (set(job) | set(task))
    linux = job.get("linuxParameters", {})
    assert not LINUX_PARAMETERS_NOT_ON_FARGATE & set(linux)
    assert set(linux.get("capabilities", {}).get("add", [])) <= {"SYS_PTRACE"}
    assert linux["initProcessEnabled"] is True  # supported on Fargate; forwards SIGTERM
    # Bind volumes only: Fargate has no Docker volume drivers.
    assert all(set(volume) == {"name"} for volume in task["volumes"])


def test_prod_sets_ephemeral_storage_and_dev_keeps_the_default(
    dev: Evaluation, prod: Evaluation
) -> None:
    assert "ephemeralStorage" not in dev.one(TASK_DEFINITION).inputs
    assert prod.one(TASK_DEFINITION).inputs["ephemeralStorage"]["sizeInGib"] == int(
        config(prod, "ephemeralStorageGiB")
    )


def test_the_runner_environment_carries_the_whole_contract(stack: Evaluation) -> None:
    env = runner_environment(stack)
    # TASK_RETRY_EXIT_CODES only when codes are listed (test_runner_environment).
    assert set(env) == CONTRACT_VARIABLES
    assert env["CLUSTER_ARN"] == stack.outputs["clusterArn"]
    assert env["TASK_DEFINITION_ARN"] == stack.outputs["taskDefinitionArn"]
    assert env["CONTAINER_NAME"] == container(stack)["name"]
    assert env["CAPACITY_PROVIDER"] == config(stack, "capacityProvider")
    assert env["RESULT_PREFIX"] == config(stack, "resultPrefix")
    security_group = stack.one("aws:ec2/securityGroup:SecurityGroup").outputs["id"]
    assert env["SECURITY_GROUPS"] == security_group
    vpc = stack.one(VPC).outputs
    subnets = vpc["publicSubnetIds"] or vpc["isolatedSubnetIds"]
    assert env["SUBNETS"].split(",") == subnets


def test_the_runner_is_python_313_on_arm64_with_explicit_limits_and_json_logs(
    stack: Evaluation,
) -> None:
    fn = stack.one(FUNCTION).inputs
    assert fn["runtime"] == "python3.13"
    assert fn["architectures"] == ["arm64"]
    assert fn["handler"] == "handler.handler"
    assert 128 <= fn["memorySize"] <= 1024
    assert 30 <= fn["timeout"] <= 900
    assert fn["loggingConfig"]["logFormat"] == "JSON"
    runner_logs = next(g for g in stack.of_type(LOG_GROUP) if g.outputs["name"].endswith("/runner"))
    assert fn["loggingConfig"]["logGroup"] == runner_logs.outputs["name"]


def test_dev_tasks_get_a_public_ip_and_prod_tasks_do_not(dev: Evaluation, prod: Evaluation) -> None:
    assert runner_environment(dev)["ASSIGN_PUBLIC_IP"] == "ENABLED"
    assert runner_environment(prod)["ASSIGN_PUBLIC_IP"] == "DISABLED"
    dev_vpc = dev.one(VPC).inputs
    prod_vpc = prod.one(VPC).inputs
    assert [s["type"] for s in dev_vpc["subnetSpecs"]] == ["Public"]
    assert [s["type"] for s in prod_vpc["subnetSpecs"]] == ["Isolated"]
    for vpc in (dev_vpc, prod_vpc):
        assert vpc["natGateways"]["strategy"] == "None"


def test_prod_reaches_s3_ecr_and_logs_through_four_vpc_endpoints(prod: Evaluation) -> None:
    vpc = prod.one(VPC).inputs
    endpoints = {e["serviceName"].rsplit(".", 1)[-1]: e for e in vpc["vpcEndpointSpecs"]}
    by_service = {e["serviceName"]: e for e in vpc["vpcEndpointSpecs"]}
    assert len(by_service) == 4
    assert endpoints["s3"]["vpcEndpointType"] == "Gateway"
    interface = [name for name in by_service if not name.endswith(".s3")]
    assert sorted(n.split(".", 3)[-1] for n in interface) == ["ecr.api", "ecr.dkr", "logs"]
    for name in interface:
        assert by_service[name]["vpcEndpointType"] == "Interface"
        assert by_service[name]["privateDnsEnabled"] is True
    assert vpc["vpcEndpointStrategy"] == "Auto"
    assert vpc["enableDnsHostnames"] is True


def test_prod_leaves_endpoint_placement_to_the_awsx_auto_strategy(prod: Evaluation) -> None:
    # awsx 3.11 (awsx/ec2/vpc.ts) fills only what a spec omits: interface endpoints get one
    # isolated subnet per AZ and a security group admitting HTTPS from the VPC's CIDR (the
    # tasks' own group is not the VPC default group, which alone the endpoints would admit);
    # the gateway endpoint gets every route table. A spec naming any of these opts out.
    for spec in prod.one(VPC).inputs["vpcEndpointSpecs"]:
        assert not {"subnetIds", "subnetConfigurations", "securityGroupIds", "routeTableIds"} & set(
            spec
        ), spec["serviceName"]
    assert prod.one(VPC).inputs["enableDnsSupport"] is True  # Auto refuses false with private DNS


def interface_endpoint_services(stack: Evaluation) -> list[str]:
    return sorted(
        spec["serviceName"].split(".", 3)[-1]
        for spec in stack.one(VPC).inputs["vpcEndpointSpecs"]
        if spec["vpcEndpointType"] == "Interface"
    )


@pytest.mark.parametrize(
    ("secrets", "stores"),
    [
        (["API_TOKEN=ssm:/jobs/api-token"], ["ssm"]),
        (["DB_PASSWORD=secretsmanager:jobs/db"], ["secretsmanager"]),
        (
            [
                "API_TOKEN=ssm:/jobs/api-token",
                "DB_PASSWORD=secretsmanager:jobs/db",
                "LICENCE=arn:aws:ssm:us-east-1:123456789012:parameter/shared/licence",
            ],
            ["secretsmanager", "ssm"],
        ),
    ],
    ids=["ssm", "secretsmanager", "both"],
)
def test_a_private_network_reaches_exactly_the_stores_the_secrets_come_from(
    secrets: list[str], stores: list[str]
) -> None:
    # ECS reads secrets before the job starts; from isolated subnets without an endpoint the
    # task stops with ResourceInitializationError (ECS guide, "Amazon ECS interface VPC
    # endpoints"). Each endpoint costs by the hour, so only the stores used get one.
    stack = evaluate("prod", {"taskSecrets": secrets})
    assert interface_endpoint_services(stack) == sorted(["ecr.api", "ecr.dkr", "logs", *stores])
    for spec in stack.one(VPC).inputs["vpcEndpointSpecs"]:
        # The same placement as the others: the Auto strategy's subnets and security group.
        assert not {"subnetIds", "subnetConfigurations", "securityGroupIds"} & set(spec)
        if spec["vpcEndpointType"] == "Interface":
            assert spec["privateDnsEnabled"] is True


def test_without_secrets_a_private_network_pays_for_no_secret_store_endpoint(
    prod: Evaluation,
) -> None:
    assert config(prod, "taskSecrets") == "[]"
    assert interface_endpoint_services(prod) == ["ecr.api", "ecr.dkr", "logs"]


def test_a_public_network_reaches_the_secret_stores_without_endpoints() -> None:
    stack = evaluate("dev", {"taskSecrets": ["API_TOKEN=ssm:/jobs/api-token"]})
    assert not stack.one(VPC).inputs.get("vpcEndpointSpecs")


def test_dev_pays_for_no_endpoints(dev: Evaluation) -> None:
    assert not dev.one(VPC).inputs.get("vpcEndpointSpecs")


def test_the_task_security_group_admits_nothing(stack: Evaluation) -> None:
    group = stack.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert not group.get("ingress")
    assert not stack.of_type("aws:ec2/securityGroupRule:SecurityGroupRule")
    assert not stack.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert [(e["fromPort"], e["toPort"]) for e in group["egress"]] == [(443, 443)]


def test_every_log_group_has_the_configured_retention(stack: Evaluation) -> None:
    groups = stack.of_type(LOG_GROUP)
    assert len(groups) == 2
    for group in groups:
        assert group.inputs["retentionInDays"] == int(config(stack, "logRetentionDays"))


def test_the_bucket_is_private_encrypted_and_denies_plain_http(stack: Evaluation) -> None:
    bucket = stack.one(BUCKET).outputs
    block = stack.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    for flag in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        assert block[flag] is True, flag
    ownership = stack.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    sse = stack.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in {
        "AES256",
        "aws:kms",
    }
    policy = as_json(stack.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    (deny,) = policy["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(deny["Resource"]) == {bucket["arn"], bucket["arn"] + "/*"}


def test_versioning_force_destroy_and_protect_follow_the_stack(
    dev: Evaluation, prod: Evaluation
) -> None:
    assert dev.one(BUCKET).inputs["forceDestroy"] is True
    assert dev.one(BUCKET).protect is False
    assert not dev.of_type("aws:s3/bucketVersioning:BucketVersioning")
    assert prod.one(BUCKET).inputs["forceDestroy"] is False
    assert prod.one(BUCKET).protect is True
    assert prod.named("aws:sqs/queue:Queue", "-runner-dlq").protect is True
    assert prod.named("aws:sqs/queue:Queue", "-failed-jobs").protect is True
    assert prod.one(TABLE).protect is True  # the job records, as the queues' messages
    assert dev.one(TABLE).protect is False
    versioning = prod.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"


LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"


def lifecycle_rules(stack: Evaluation) -> dict[str, dict[str, Any]]:
    lifecycle = stack.one(LIFECYCLE)
    assert lifecycle.inputs["bucket"] == stack.one(BUCKET).outputs["id"]
    return {rule["id"]: rule for rule in lifecycle.inputs["rules"]}


def test_every_bucket_aborts_abandoned_multipart_uploads_after_a_week(stack: Evaluation) -> None:
    rule = lifecycle_rules(stack)["abort-incomplete-multipart-uploads"]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == {}, "the rule must cover the whole bucket"
    assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}


def test_a_versioned_bucket_expires_old_versions_after_the_configured_days(
    dev: Evaluation, prod: Evaluation
) -> None:
    assert "expire-noncurrent-versions" not in lifecycle_rules(dev), "dev is not versioned"
    rule = lifecycle_rules(prod)["expire-noncurrent-versions"]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == {}
    assert rule["noncurrentVersionExpiration"] == {
        "noncurrentDays": int(config(prod, "noncurrentVersionDays"))
    }
    assert rule["expiration"] == {"expiredObjectDeleteMarker": True}
    # S3 answers OperationAborted to concurrent writes of one bucket's configuration.
    versioning = prod.one("aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.urn in prod.one(LIFECYCLE).dependencies


def test_no_noncurrent_version_days_keeps_every_version() -> None:
    stack = evaluate("prod", {"noncurrentVersionDays": 0})
    assert set(lifecycle_rules(stack)) == {"abort-incomplete-multipart-uploads"}


def test_the_dead_letter_queue_is_the_encrypted_on_failure_destination(
    stack: Evaluation,
) -> None:
    queue = stack.named("aws:sqs/queue:Queue", "-runner-dlq")
    assert queue.inputs["sqsManagedSseEnabled"] is True
    assert queue.inputs["messageRetentionSeconds"] == 14 * 24 * 3600
    invoke = stack.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig").inputs
    assert invoke["functionName"] == stack.one(FUNCTION).outputs["name"]
    assert invoke["maximumRetryAttempts"] == 2
    assert invoke["maximumEventAgeInSeconds"] == int(config(stack, "maxEventAgeSeconds"))
    assert invoke["destinationConfig"]["onFailure"]["destination"] == queue.outputs["arn"]
    assert stack.outputs["deadLetterQueueUrl"] == queue.outputs["url"]


def test_the_cluster_offers_both_fargate_providers_and_insights_per_stack(
    dev: Evaluation, prod: Evaluation
) -> None:
    for stack, insights in ((dev, "disabled"), (prod, "enabled")):
        cluster = stack.one("aws:ecs/cluster:Cluster").inputs
        assert cluster["settings"] == [{"name": "containerInsights", "value": insights}]
        providers = stack.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders").inputs
        assert sorted(providers["capacityProviders"]) == ["FARGATE", "FARGATE_SPOT"]


def test_the_repository_scans_on_push_and_keeps_the_last_images(stack: Evaluation) -> None:
    repository = stack.one("aws:ecr/repository:Repository").inputs
    assert repository["imageScanningConfiguration"]["scanOnPush"] is True
    assert repository["imageTagMutability"] == "IMMUTABLE"
    lifecycle = as_json(stack.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    (rule,) = lifecycle["rules"]
    assert rule["selection"]["countType"] == "imageCountMoreThan"
    assert rule["selection"]["countNumber"] == int(config(stack, "keepImages"))


TAGGABLE = {
    BUCKET,
    FUNCTION,
    TASK_DEFINITION,
    LOG_GROUP,
    VPC,
    "aws:sqs/queue:Queue",
    "aws:iam/role:Role",
    "aws:ecs/cluster:Cluster",
    "aws:ecr/repository:Repository",
    "aws:ec2/securityGroup:SecurityGroup",
    TABLE,
    "aws:cloudwatch/eventRule:EventRule",
}


def test_every_taggable_resource_carries_the_stack_tags(stack: Evaluation) -> None:
    configured = dict(item.split("=", 1) for item in as_json(config(stack, "tags")))
    expected = {"project": "s3-fargate-jobs", "stack": stack.stack, **configured}
    seen = 0
    for resource in stack:
        if resource.type in TAGGABLE:
            seen += 1
            assert resource.inputs.get("tags") == expected, resource.name
    assert seen >= len(TAGGABLE)


def test_everything_is_one_component_whose_children_are_parented_and_named_after_it(
    stack: Evaluation,
) -> None:
    (system,) = stack.of_type("s3fargatejobs:index:S3FargateJobs")
    assert system.parent.endswith("pulumi:pulumi:Stack::s3-fargate-jobs-" + stack.stack)
    components = {r.urn: r for r in stack if r.type.startswith("s3fargatejobs:index:")}
    assert len(components) == 9
    for resource in stack:
        if resource is system:
            continue
        assert resource.parent in components, resource.name
        assert resource.name.startswith(components[resource.parent].name), resource.name


def test_nothing_region_or_account_specific_is_written_into_the_program() -> None:
    sources = [PROJECT_DIR / "__main__.py", *sorted((PROJECT_DIR / "infra").glob("*.py"))]
    for source in sources:
        text = source.read_text()
        for literal in ("us-east-1", "eu-west-1", ACCOUNT_ID, "arn:aws:", "com.amazonaws."):
            assert literal not in text, f"{source.name} contains {literal}"


@pytest.mark.parametrize("suffixes", [[".csv"], [".csv", ".tsv"]])
def test_upload_suffixes_become_one_filter_each_with_the_prefix(suffixes: list[str]) -> None:
    stack = evaluate("dev", {"uploadSuffixes": suffixes})
    targets = stack.one(NOTIFICATION).inputs["lambdaFunctions"]
    assert [t["filterSuffix"] for t in targets] == suffixes
    assert {t["filterPrefix"] for t in targets} == {"uploads/"}


def test_an_existing_network_is_used_instead_of_a_new_vpc() -> None:
    stack = evaluate("prod", {"vpcId": "vpc-0abc", "subnetIds": ["subnet-1", "subnet-2"]})
    assert not stack.of_type(VPC)
    assert stack.one("aws:ec2/securityGroup:SecurityGroup").inputs["vpcId"] == "vpc-0abc"
    assert runner_environment(stack)["SUBNETS"] == "subnet-1,subnet-2"


# What a deployed stack holds that an upgrade must keep: messages (queues), the alarms' history
# and the topic's subscriptions. Pulumi keeps a resource when its URN is unchanged: its type,
# its name and its parent's (the parent's type chain is part of the URN). A new URN deletes the
# resource and creates another. (component, its type) -> (type, name after the component's).
KEPT = {
    ("monitoring", "s3fargatejobs:index:FailureMonitoring"): [
        ("aws:sqs/queue:Queue", "failed-jobs"),
        ("aws:sqs/queue:Queue", "undeliverable"),
        # Replaced, the old policy's deletion would empty the queue's policy after the new one
        # was written: a queue's policy is one attribute of the queue.
        ("aws:sqs/queuePolicy:QueuePolicy", "undeliverable-from-eventbridge"),
        ("aws:sns/topic:Topic", "alerts"),
        ("aws:kms/key:Key", "alerts"),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", "work-waiting"),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", "runner-failing"),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", "backlog-age"),
    ],
    ("runner", "s3fargatejobs:index:TaskRunner"): [
        ("aws:sqs/queue:Queue", "dlq"),
        ("aws:sqs/queue:Queue", "backlog"),
    ],
}


def test_an_upgrade_keeps_every_queue_alarm_and_topic_a_deployed_stack_has(
    stack: Evaluation,
) -> None:
    (system,) = stack.of_type("s3fargatejobs:index:S3FargateJobs")
    by_urn = {resource.urn: resource for resource in stack}

    def identity(resource: Any) -> tuple[str, str, str, str]:
        parent = by_urn[resource.parent]
        return resource.type, resource.name, parent.type, parent.name

    present = {identity(r) for r in stack if r.parent in by_urn and r is not system}
    expected = {
        (type_, f"{system.name}-{component}-{child}", component_type, f"{system.name}-{component}")
        for (component, component_type), children in KEPT.items()
        for type_, child in children
    }
    assert expected - present == set()
    for component, component_type in KEPT:
        (found,) = stack.of_type(component_type)
        assert (found.name, found.parent) == (f"{system.name}-{component}", system.urn)
