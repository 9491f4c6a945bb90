"""The job table: declared as the runner's job store uses it, in every stack."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.job_table import RunnerContractError, read_job_table_schema
from jobctl.evaluate import DeclaredResource, Evaluation
from tests.infra.conftest import TASKRUNNER_DIR

if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

import job_record
import job_store
from runner_settings import load_settings

TABLE = "aws:dynamodb/table:Table"
NOW = 1_795_000_000.0


def table(stack: Evaluation) -> DeclaredResource:
    return stack.one(TABLE)


def test_every_stack_keeps_its_jobs_in_one_on_demand_table_capped_or_not(
    stack: Evaluation,
) -> None:
    # The job records and the slot count live there whether or not maxConcurrentTasks is set.
    inputs = table(stack).inputs
    assert inputs["billingMode"] == "PAY_PER_REQUEST"  # nothing to pay while idle but storage
    env = stack.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    assert env["STATE_TABLE"] == table(stack).outputs["name"]
    assert stack.outputs["jobTableName"] == table(stack).outputs["name"]


def test_the_table_is_keyed_indexed_and_expired_as_the_runners_job_store_reads_it(
    stack: Evaluation,
) -> None:
    inputs = table(stack).inputs
    assert (inputs["hashKey"], inputs["rangeKey"]) == (job_store.PARTITION_KEY, job_store.SORT_KEY)
    assert inputs["ttl"] == {"attributeName": job_store.TTL_ATTRIBUTE, "enabled": True}
    indexes = {index["name"]: index for index in inputs["globalSecondaryIndexes"]}
    assert {
        name: tuple(
            key["attributeName"]
            for kind in ("HASH", "RANGE")
            for key in index["keySchemas"]
            if key["keyType"] == kind
        )
        for name, index in indexes.items()
    } == dict(job_store.INDEXES)
    assert {name: index["projectionType"] for name, index in indexes.items()} == dict(
        job_store.INDEX_PROJECTIONS
    )
    # The codec writes shards as strings and times as numbers; DynamoDB refuses an item whose
    # key attribute has another type than the table declares.
    assert {a["name"]: a["type"] for a in inputs["attributes"]} == {
        "pk": "S",
        "sk": "S",
        "waitShard": "S",
        "readyAt": "N",
        "delayShard": "S",
        "retryAt": "N",
        "sweepShard": "S",
        "sweepSince": "N",
        "recordedHour": "S",
        "recordedAt": "N",
    }


def test_the_runners_job_store_works_on_the_table_as_declared(
    dev: Evaluation, declared_table_on_moto: tuple[Any, str]
) -> None:
    client, name = declared_table_on_moto
    env = dict(dev.one("aws:lambda/function:Function").inputs["environment"]["variables"])
    store = job_store.JobStore(client, name, record_days=load_settings(env).record_days)
    job = job_record.new_job(bucket="b", key="uploads/a.csv", job_id="0a1b2c3d4e5f", now=NOW)
    store.create(job)
    # The scheduler takes the oldest waiting job (index "waiting")...
    assert [j.key for j in store.oldest_waiting(ready_by=NOW + 1, wanted=5)] == ["uploads/a.csv"]
    # ... claims its slot in a transaction with the slot count ...
    store.apply(job, job_record.claim(job, now=NOW + 1, default_provider="FARGATE"))
    assert store.slots().active == 1
    # ... and the sweep finds its task under way (index "sweep").
    assert [j.state for j in store.needing_sweep()] == ["starting"]
    # `jobctl jobs` lists it by the hour it was recorded (index "recent", then BatchGetItem).
    assert [j.job_id for j in store.recent(since=NOW - 60, until=NOW + 60)] == ["0a1b2c3d4e5f"]
    assert [j.job_id for j in store.jobs_of("b", "uploads/a.csv")] == ["0a1b2c3d4e5f"]


def test_a_finished_jobs_record_expires_after_the_stacks_record_days(dev: Evaluation) -> None:
    env = dev.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    days = int(dev.config["s3-fargate-jobs:jobRecordDays"])
    assert env["JOB_RECORD_DAYS"] == str(days)
    finished = job_record.Job(
        bucket="b", key="k", job_id="0a1b2c3d", state="succeeded", version=3, recorded_at=NOW,
        finished_at=NOW + 100,
    )  # fmt: skip
    item = job_store.encode(finished, record_days=load_settings(dict(env)).record_days)
    # TTL takes a Number of epoch seconds in the attribute the table names.
    expires = item[table(dev).inputs["ttl"]["attributeName"]]
    assert int(expires["N"]) == int(NOW + 100) + days * 24 * 3600


def test_prod_protects_its_job_table_and_dev_lets_it_go(dev: Evaluation, prod: Evaluation) -> None:
    assert table(prod).protect is True
    assert table(dev).protect is False


def runner_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "taskrunner"
    shutil.copytree(TASKRUNNER_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_an_index_the_runner_adds_is_declared_from_its_code(tmp_path: Path) -> None:
    source = runner_copy(tmp_path)
    store = source / "job_store.py"
    text = store.read_text()
    for constant, entry in (
        ("INDEXES", '    "by-size": ("waitShard", "readyAt"),\n'),
        ("INDEX_PROJECTIONS", '    "by-size": "ALL",\n'),
    ):
        start = text.index(f"{constant}: Mapping")
        end = text.index("}", start)
        text = text[:end] + entry + text[end:]
    store.write_text(text)
    schema = read_job_table_schema(source)
    assert schema.indexes["by-size"] == ("waitShard", "readyAt")
    assert schema.projections["by-size"] == "ALL"


def test_an_index_on_an_attribute_of_unknown_type_is_refused_naming_it(tmp_path: Path) -> None:
    source = runner_copy(tmp_path)
    store = source / "job_store.py"
    store.write_text(
        store.read_text().replace('("recordedHour", "recordedAt")', '("recordedDay", "recordedAt")')
    )
    with pytest.raises(RunnerContractError) as raised:
        read_job_table_schema(source)
    assert "recordedDay" in str(raised.value)
    assert "ATTRIBUTE_TYPES" in str(raised.value)


def test_a_job_store_without_its_table_constants_is_refused_naming_the_constant(
    tmp_path: Path,
) -> None:
    source = runner_copy(tmp_path)
    store = source / "job_store.py"
    store.write_text(store.read_text().replace('TTL_ATTRIBUTE = "expiresAt"', ""))
    with pytest.raises(RunnerContractError) as raised:
        read_job_table_schema(source)
    assert "no constant TTL_ATTRIBUTE" in str(raised.value)
