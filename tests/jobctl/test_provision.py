"""The demo's job table, provisioned from what the program declares (or, until it declares the
job table, from the runner's own layout), is the table the runner's tests run on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

from jobctl.evaluate import DeclaredResource, Evaluation, evaluate
from jobctl.provision import (
    TABLE_TYPE,
    JobTable,
    Pipeline,
    ProvisionError,
    job_table_of,
    provision_job_table,
    runner_table_declaration,
    with_job_table,
)
from tests.fakes.job_table import create_job_table


def layout(name: str) -> dict[str, Any]:
    """What DynamoDB says of a table's keys, attributes, indexes and TTL, names aside."""
    dynamodb = boto3.client("dynamodb")
    table = dynamodb.describe_table(TableName=name)["Table"]
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    return {
        "keys": table["KeySchema"],
        "attributes": sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "indexes": sorted(
            (i["IndexName"], tuple(k["AttributeName"] for k in i["KeySchema"]), i["Projection"])
            for i in table["GlobalSecondaryIndexes"]
        ),
        "billing": table["BillingModeSummary"]["BillingMode"],
        "ttl": ttl.get("AttributeName"),
    }


def test_the_job_table_as_pulumi_declares_it_is_the_table_the_runner_tests_use(
    moto: None,
) -> None:
    provision_job_table(boto3.client("dynamodb"), JobTable("declared", runner_table_declaration()))
    create_job_table(boto3.client("dynamodb"), "tests")
    declared, tests = layout("declared"), layout("tests")
    assert declared.pop("ttl") == "expiresAt"
    tests.pop("ttl")  # tests/fakes/job_table.py does not switch TTL on
    assert declared == tests


def test_indexes_declared_with_key_schemas_make_the_same_table(moto: None) -> None:
    declaration = runner_table_declaration()
    for index in declaration["globalSecondaryIndexes"]:
        hash_key, range_key = index.pop("hashKey"), index.pop("rangeKey")
        index["keySchemas"] = [
            {"attributeName": hash_key, "keyType": "HASH"},
            {"attributeName": range_key, "keyType": "RANGE"},
        ]
    dynamodb = boto3.client("dynamodb")
    provision_job_table(dynamodb, JobTable("with-key-schemas", declaration))
    provision_job_table(dynamodb, JobTable("with-keys", runner_table_declaration()))
    assert layout("with-key-schemas") == layout("with-keys")


def test_a_job_table_without_an_index_the_runner_queries_is_refused_naming_it(
    moto: None,
) -> None:
    declaration = runner_table_declaration()
    declaration["globalSecondaryIndexes"] = [
        index for index in declaration["globalSecondaryIndexes"] if index["name"] != "recent"
    ]
    with pytest.raises(
        ProvisionError,
        match=r"index 'recent' must have keys \('recordedHour', 'recordedAt'\) \(no such index\)",
    ):
        provision_job_table(boto3.client("dynamodb"), JobTable("jobs", declaration))
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []


def evaluation_with(table: dict[str, Any] | None, env: dict[str, str]) -> Evaluation:
    """An evaluation holding the runner and, if given, one table, as the program declares them."""
    resources = [
        DeclaredResource(
            type="aws:lambda/function:Function",
            name="jobs-runner",
            urn="urn:runner",
            parent="",
            inputs={"environment": {"variables": env}},
            outputs={},
            dependencies=(),
            protect=False,
            custom=True,
        )
    ]
    if table is not None:
        resources.append(
            DeclaredResource(
                type=TABLE_TYPE,
                name="jobs-jobs",
                urn="urn:table",
                parent="",
                inputs=table,
                outputs={"name": "jobs-jobs-1a2b3c4"},
                dependencies=(),
                protect=False,
                custom=True,
            )
        )
    return Evaluation(stack="dev", config={}, resources=resources, outputs={"bucketName": "b"})


def test_a_declared_job_table_is_provisioned_as_declared() -> None:
    declaration = runner_table_declaration()
    declaration["ttl"] = {"attributeName": "goneAt", "enabled": True}
    table = job_table_of(evaluation_with(declaration, {"STATE_TABLE": "jobs-jobs-1a2b3c4"}))
    assert (table.name, table.stand_in) == ("jobs-jobs-1a2b3c4", None)
    assert table.declaration["ttl"]["attributeName"] == "goneAt"


def test_the_caps_hash_key_table_is_replaced_by_the_runners_layout_under_its_name() -> None:
    old = {
        "hashKey": "pk",
        "attributes": [{"name": "pk", "type": "S"}],
        "billingMode": "PAY_PER_REQUEST",
    }
    table = job_table_of(evaluation_with(old, {"STATE_TABLE": "jobs-jobs-1a2b3c4"}))
    assert table.name == "jobs-jobs-1a2b3c4"
    assert table.declaration == runner_table_declaration()
    assert table.stand_in is not None
    assert "hash key only" in table.stand_in


def test_without_a_declared_table_the_demo_names_one_and_exports_it_as_the_program_will() -> None:
    evaluation = evaluation_with(None, {})
    table = job_table_of(evaluation)
    assert table.name == "s3-fargate-jobs-dev-jobs"
    assert table.stand_in is not None
    assert "not declared" in table.stand_in
    assert with_job_table(evaluation)["jobTableName"] == "s3-fargate-jobs-dev-jobs"


def test_a_stack_jobtablename_output_is_kept() -> None:
    evaluation = evaluation_with(None, {})
    evaluation.outputs["jobTableName"] = "exported"
    assert with_job_table(evaluation)["jobTableName"] == "exported"


def test_the_runner_gets_the_declared_environment_and_every_variable_it_needs(
    emulator_stacks: Callable[[str], Pipeline],
) -> None:
    pipeline = emulator_stacks("prod")
    declared = evaluate("prod").one("aws:lambda/function:Function").inputs["environment"]
    for name, value in declared["variables"].items():
        if name not in ("SUBNETS", "SECURITY_GROUPS"):  # the emulator's own network ids
            assert pipeline.runner_env[name] == value, name
    outputs = pipeline.outputs
    assert pipeline.runner_env["STATE_TABLE"] == outputs["jobTableName"]
    assert pipeline.runner_env["FAILED_JOBS_QUEUE_URL"] == outputs["failedJobsQueueUrl"]
    assert pipeline.runner_env["JOB_LOG_GROUP"] == outputs["logGroupName"]
