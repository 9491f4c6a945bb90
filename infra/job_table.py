"""The job table: one DynamoDB table of job records, shaped by the runner code that uses it.

Its keys, indexes and TTL attribute are the constants of the runner's `job_store.py`, read from
the very source the Lambda is built from, so the table cannot drift from the code. They are read
with `ast`, never imported: the runner's modules expect to be top-level (as in the Lambda's zip)
and import botocore, which a Pulumi program need not have.
"""

from __future__ import annotations

import ast
import functools
import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

STORE_MODULE = "job_store.py"
# DynamoDB declares the type of each key attribute (the table's and its indexes'); the runner's
# codec writes these types (job_store.encode). Any other attribute needs no declaration.
ATTRIBUTE_TYPES: Mapping[str, str] = {
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
PROJECTIONS = ("ALL", "KEYS_ONLY")  # INCLUDE would need its attributes listed: the runner has none


class RunnerContractError(pulumi.RunError):
    """The runner's code asks for a table this program cannot declare; says what to change."""


@dataclass(frozen=True)
class JobTableSchema:
    """What the runner's job store expects of its table."""

    partition_key: str
    sort_key: str
    ttl_attribute: str
    indexes: Mapping[str, tuple[str, str]]  # name -> (hash attribute, range attribute)
    projections: Mapping[str, str]  # name -> ALL or KEYS_ONLY
    runner_queries: tuple[str, ...] = ()  # the indexes the runner itself queries

    @property
    def key_attributes(self) -> list[str]:
        """Every attribute a key is made of, the table's first, each once."""
        names = [self.partition_key, self.sort_key]
        for hash_key, range_key in self.indexes.values():
            names += [hash_key, range_key]
        return list(dict.fromkeys(names))


class _NotLiteral(Exception):  # noqa: N818 - control flow: the assignment is skipped
    pass


def _literal(node: ast.expr, known: Mapping[str, Any]) -> Any:
    """A constant expression, names of constants read before it included."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_literal(item, known) for item in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {
            _literal(key, known): _literal(value, known)
            for key, value in zip(node.keys, node.values, strict=True)
            if key is not None
        }
    raise _NotLiteral


@contextmanager
def _no_collection() -> Iterator[None]:
    """CPython 3.11 can fail ast.parse with "AST constructor recursion depth mismatch" when a
    collection during it runs a finaliser (python/cpython#106905); Pulumi's asyncio leaves
    such finalisers about. Collect nothing while parsing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.lru_cache(maxsize=16)
def _parsed(source: Path, modified: float) -> ast.Module:
    """One parse per version of a file: the program reads the same runner code per stack."""
    with _no_collection():
        return ast.parse(source.read_text(encoding="utf-8"), filename=str(source))


def module_constants(source: Path) -> dict[str, Any]:
    """The top-level constants of a module: NAME = <literal>, in order, without running it."""
    known: dict[str, Any] = {}
    for statement in _parsed(source.resolve(), source.stat().st_mtime).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                known[target.id] = _literal(value, known)
            except _NotLiteral:
                continue
    return known


def read_job_table_schema(runner_source: Path) -> JobTableSchema:
    """The table the runner's job store (in the folder `runner_source`) reads and writes."""
    source = runner_source / STORE_MODULE
    constants = module_constants(source)

    def constant(name: str) -> Any:
        if name not in constants:
            raise RunnerContractError(
                f"{source} has no constant {name}, which declares the job table; "
                "restore it or change infra/job_table.py with the runner"
            )
        return constants[name]

    schema = JobTableSchema(
        partition_key=constant("PARTITION_KEY"),
        sort_key=constant("SORT_KEY"),
        ttl_attribute=constant("TTL_ATTRIBUTE"),
        indexes=dict(constant("INDEXES")),
        projections=dict(constant("INDEX_PROJECTIONS")),
        runner_queries=tuple(constant("RUNNER_QUERIES")),
    )
    if not set(schema.runner_queries) <= set(schema.indexes):
        raise RunnerContractError(
            f"{source}: RUNNER_QUERIES names indexes INDEXES does not declare"
        )
    untyped = [name for name in schema.key_attributes if name not in ATTRIBUTE_TYPES]
    if untyped:
        raise RunnerContractError(
            f"{source} keys the job table on {', '.join(untyped)}, whose DynamoDB type "
            "infra/job_table.py does not declare: add each, as its codec writes it, to "
            "ATTRIBUTE_TYPES"
        )
    unprojected = sorted(
        name for name in schema.indexes if schema.projections.get(name) not in PROJECTIONS
    )
    if unprojected or set(schema.projections) != set(schema.indexes):
        raise RunnerContractError(
            f"{source}: INDEX_PROJECTIONS must give each index of INDEXES one of "
            f"{', '.join(PROJECTIONS)} (indexes without one: {', '.join(unprojected) or 'none'})"
        )
    return schema


def job_table(
    name: str,
    schema: JobTableSchema,
    *,
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.dynamodb.Table:
    """The table: on demand (nothing to pay while idle but storage), a finished job's record
    removed by TTL, and the indexes the scheduler, the sweep and `jobctl jobs` query."""
    return aws.dynamodb.Table(
        name,
        billing_mode="PAY_PER_REQUEST",
        hash_key=schema.partition_key,
        range_key=schema.sort_key,
        attributes=[
            aws.dynamodb.TableAttributeArgs(name=attribute, type=ATTRIBUTE_TYPES[attribute])
            for attribute in schema.key_attributes
        ],
        global_secondary_indexes=[
            aws.dynamodb.TableGlobalSecondaryIndexArgs(
                name=index,
                key_schemas=[
                    aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                        attribute_name=hash_key, key_type="HASH"
                    ),
                    aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                        attribute_name=range_key, key_type="RANGE"
                    ),
                ],
                projection_type=schema.projections[index],
            )
            for index, (hash_key, range_key) in schema.indexes.items()
        ],
        ttl=aws.dynamodb.TableTtlArgs(attribute_name=schema.ttl_attribute, enabled=True),
        # Encrypted at rest with an AWS owned key, as every table is: the items hold bucket and
        # key names, ECS stop reasons and task ARNs, no upload's content and no secret, so a
        # customer-managed key ($1/month and a key policy to keep) would protect nothing more.
        tags=dict(tags),
        opts=opts,
    )
