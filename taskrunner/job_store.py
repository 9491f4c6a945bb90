"""The job records in DynamoDB: the one place a job's state is written.

One on-demand table (it costs nothing while idle) holds a record per upload and two items of
the scheduler's:
- a job: pk `upload#<bucket>/<key>`, sk `job#<job id>`. Every write is conditional on the
  `version` it read (`apply`), so of two invocations acting on one job only one succeeds.
- `#scheduler`/`slots`: how many jobs hold a task slot (starting or running), changed in the
  same transaction as the job that takes or frees one, so the count is exact and the cap is
  never exceeded; and the account's task limit as ECS last stated it.
- `#scheduler`/`stats`: running totals for `jobctl status` (best effort).

Indexes: `waiting` (jobs waiting, by their place: the scheduler takes the oldest), `delayed`
(retries waiting out their delay, by when it ends: the sweep puts them back in their place) and
`sweep` (tasks under way and failures not yet reported: what the sweep looks at), each sharded
so that a burst's writes spread over partitions; `recent` (every job by the hour it
was recorded, keys only, written once per job: `jobctl jobs`). A job is in an index only while
it has that index's key attributes, which the codec writes from its state.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from job_record import Attempt, Job, from_fields, slot_change, written_over

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

logger = logging.getLogger("taskrunner")

SHARDS = 4  # per index; a deployed table's shards must never shrink (queries cover them all)
WAITING_INDEX = "waiting"
DELAYED_INDEX = "delayed"
SWEEP_INDEX = "sweep"
RECENT_INDEX = "recent"
# Every index the table declares, with its key attributes: infra/runner.py creates them.
INDEXES: Mapping[str, tuple[str, str]] = {
    WAITING_INDEX: ("waitShard", "readyAt"),
    DELAYED_INDEX: ("delayShard", "retryAt"),
    SWEEP_INDEX: ("sweepShard", "sweepSince"),
    RECENT_INDEX: ("recordedHour", "recordedAt"),
}
# What the runner itself queries; jobctl reads the others (the table's keys, `recent`) with a
# person's credentials, so the Lambda is granted these alone (infra/runner.py).
RUNNER_QUERIES = (WAITING_INDEX, DELAYED_INDEX, SWEEP_INDEX)
INDEX_PROJECTIONS: Mapping[str, str] = {
    WAITING_INDEX: "ALL",
    DELAYED_INDEX: "ALL",
    SWEEP_INDEX: "ALL",
    RECENT_INDEX: "KEYS_ONLY",
}
PARTITION_KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expiresAt"
SCHEDULER = "#scheduler"
SLOTS = {PARTITION_KEY: {"S": SCHEDULER}, SORT_KEY: {"S": "slots"}}
STATS = {PARTITION_KEY: {"S": SCHEDULER}, SORT_KEY: {"S": "stats"}}
QUERY_PAGE = 100
BATCH_GET = 100  # BatchGetItem's limit
# TransactionConflict: another transaction held the slots item (or the job) at that moment. A
# burst of uploads contends for the slots item; retries with jittered, doubling pauses spread
# the contenders out (about 1.5 s in all).
CONFLICT_RETRIES = 5


class StoreError(Exception):
    """DynamoDB refused or failed a request (after botocore's retries); the message says how."""


class Conflict(Exception):  # noqa: N818 - a situation, not a failure of ours
    """The job changed since it was read (another invocation acted on it)."""


class Full(Exception):  # noqa: N818
    """No slot is free: the write that would take one was refused."""


def job_key(bucket: str, key: str, job_id: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": f"upload#{bucket}/{key}"}, SORT_KEY: {"S": f"job#{job_id}"}}


def shard_of(job_id: str, index: str) -> str:
    return f"{index[0]}{int(job_id[:8], 16) % SHARDS}"


# --- the codec: a Job as an item, and back ---------------------------------------------------


def _number(value: float) -> dict[str, str]:
    if type(value) is int:  # most are counts: no rounding to look at
        return {"N": str(value)}
    return {"N": repr(round(value, 3)) if isinstance(value, float) else str(value)}


def _value(value: object) -> dict[str, Any]:
    # By exact type first: a job's fields are of these types, and every write encodes some.
    if type(value) is str:
        return {"S": value}
    if type(value) is float or type(value) is int:
        return _number(value)
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return _number(value)
    return {"S": str(value)}


def _hour(epoch: float) -> str:
    return _hour_named(int(epoch // 3600))


@functools.lru_cache(maxsize=64)
def _hour_named(hours: int) -> str:
    # Every write names its job's hour, and the jobs of a batch share a few.
    return time.strftime("%Y-%m-%dT%H", time.gmtime(hours * 3600))


def _plain(value: Mapping[str, Any]) -> Any:
    if "S" in value:
        return value["S"]
    if "N" in value:
        text = value["N"]
        return float(text) if "." in text or "e" in text or "E" in text else int(text)
    if "BOOL" in value:
        return bool(value["BOOL"])
    if "M" in value:
        return {name: _plain(inner) for name, inner in value["M"].items()}
    if "L" in value:
        return [_plain(inner) for inner in value["L"]]
    if "NULL" in value:
        return None
    raise ValueError(f"unexpected attribute value {value!r}")


def _optional_float(raw: Mapping[str, Any], name: str) -> float | None:
    value = raw.get(name)
    return None if value is None else float(value)


def _optional_int(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    return None if value is None else int(value)


# The readers take an attribute's usual type straight from its value, and any other through
# `_plain`: every sweep decodes each job under way and the oldest waiting, so decoding is much
# of the runner's work.


def _text(value: Mapping[str, Any]) -> str:
    text = value.get("S")
    return text if text is not None else str(_plain(value))


def _real(value: Mapping[str, Any]) -> float:
    text = value.get("N")
    return float(text) if text is not None else float(_plain(value))


def _whole(value: Mapping[str, Any]) -> int:
    text = value.get("N")
    return int(text) if text is not None and text.isdigit() else int(_plain(value))


def _flag(value: Mapping[str, Any]) -> bool:
    return bool(_plain(value))


Reader = Callable[[Mapping[str, Any]], Any]
# attribute -> (field, reader), in the order an item holds them (a job's are written by this
# table too; an attempt's by Attempt.fields, the names its report gives). A field that is None
# has no attribute. A record is read in one pass over its attributes, and those it lacks (most
# are optional) cost nothing.
_ATTEMPT_FIELDS: Mapping[str, tuple[str, Reader]] = {
    "attempt": ("number", _whole),
    "claim": ("claim", _whole),
    "capacityProvider": ("provider", _text),
    "claimedAt": ("claimed_at", _real),
    "taskArn": ("task_arn", _text),
    "startedAt": ("started_at", _real),
    "stoppedAt": ("stopped_at", _real),
    "stopCode": ("stop_code", _text),
    "stoppedReason": ("stopped_reason", _text),
    "exitCode": ("exit_code", _whole),
    "containerReason": ("container_reason", _text),
    "cause": ("cause", _text),
    "stopRequested": ("stop_requested", _text),
}
# A job's attempts (a list of maps) and the attributes its state implies (`_derived`) follow
# these.
_JOB_FIELDS: Mapping[str, tuple[str, Reader]] = {
    "bucket": ("bucket", _text),
    "objectKey": ("key", _text),
    "jobId": ("job_id", _text),
    "state": ("state", _text),
    "version": ("version", _whole),
    "recordedAt": ("recorded_at", _real),
    "readyAt": ("ready_at", _real),
    "retryAt": ("retry_at", _real),
    "versionId": ("version_id", _text),
    "uploadedAt": ("uploaded_at", _text),
    "size": ("size", _whole),
    "attemptCount": ("attempt_count", _whole),
    "claims": ("claims", _whole),
    "budgetFrom": ("budget_from", _whole),
    "nextProvider": ("next_provider", _text),
    "activeSince": ("active_since", _real),
    "finishedAt": ("finished_at", _real),
    "reason": ("reason", _text),
    "reported": ("reported", _flag),
    "reportTakenAt": ("report_taken_at", _real),
    "redrives": ("redrives", _whole),
    "lastRedriveOf": ("last_redrive_of", _text),
}
_JOB_ATTRIBUTES = tuple((attribute, name) for attribute, (name, _) in _JOB_FIELDS.items())


def _attempt_item(attempt: Attempt) -> dict[str, Any]:
    # By the names its failure report gives it too (Attempt.fields).
    return {
        "M": {name: _value(value) for name, value in attempt.fields().items() if value is not None}
    }


def _attempts_item(attempts: tuple[Attempt, ...]) -> dict[str, Any]:
    return {"L": [_attempt_item(attempt) for attempt in attempts]}


def _derived(job: Job, record_days: int) -> dict[str, Any]:
    """The attributes a job's fields imply: its hour, and the index keys its state requires."""
    item: dict[str, Any] = {"recordedHour": {"S": _hour(job.recorded_at)}}
    if job.state == "waiting" and job.retry_at is not None:
        item["delayShard"] = {"S": shard_of(job.job_id, DELAYED_INDEX)}
    elif job.state == "waiting" and job.ready_at is not None:
        item["waitShard"] = {"S": shard_of(job.job_id, WAITING_INDEX)}
    if job.needs_sweep:
        item["sweepShard"] = {"S": shard_of(job.job_id, SWEEP_INDEX)}
        item["sweepSince"] = _number(job.active_since or job.finished_at or job.recorded_at)
    if job.finished_at is not None and job.state in ("succeeded", "failed"):
        item[TTL_ATTRIBUTE] = _number(int(job.finished_at) + record_days * 24 * 3600)
    return item


def encode(job: Job, *, record_days: int) -> dict[str, Any]:
    """The item for a job, index keys included as its state requires."""
    fields = job.__dict__
    item = job_key(job.bucket, job.key, job.job_id)
    for attribute, name in _JOB_ATTRIBUTES:
        value = fields[name]
        if value is not None:
            item[attribute] = _value(value)
    if job.attempts:
        item["attempts"] = _attempts_item(job.attempts)
    item |= _derived(job, record_days)
    return item


def changes(
    before: Job, after: Job, *, record_days: int
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The update expression that makes `before`'s item `after`'s (a later version: every write
    changes one): SET each attribute of a field that changed and each implied one that differs,
    REMOVE those gone; every name a placeholder (`state`, `size` and `key`-like names are
    reserved words in DynamoDB's expressions).

    Only what changed is encoded: every write makes one, and of a job's 24 fields a write
    changes a few. A transition copies the fields it leaves alone, so a field that is the same
    object is unchanged; a field of equal value set again is SET again, which writes the same.
    """
    old, new = before.__dict__, after.__dict__
    sets: list[tuple[str, Any]] = []
    removes: list[str] = []
    for attribute, name in _JOB_ATTRIBUTES:
        value = new[name]
        if value is old[name]:
            continue
        if value is None:
            removes.append(attribute)
        else:
            sets.append((attribute, _value(value)))
    if after.attempts is not before.attempts:
        if after.attempts:
            sets.append(("attempts", _attempts_item(after.attempts)))
        elif before.attempts:
            removes.append("attempts")
    implied, implied_before = _derived(after, record_days), _derived(before, record_days)
    sets += [(name, value) for name, value in implied.items() if implied_before.get(name) != value]
    removes += [name for name in implied_before if name not in implied]
    names = {
        f"#n{number}": name for number, name in enumerate([name for name, _ in sets] + removes)
    }
    values = {f":v{number}": value for number, (_, value) in enumerate(sets)}
    expression = "SET " + ", ".join(f"#n{number} = :v{number}" for number in range(len(sets)))
    if removes:
        expression += " REMOVE " + ", ".join(
            f"#n{number}" for number in range(len(sets), len(names))
        )
    return expression, names, values


def _fields(item: Mapping[str, Any], names: Mapping[str, tuple[str, Reader]]) -> dict[str, Any]:
    """The fields an item's attributes give (a NULL one is as good as absent)."""
    fields: dict[str, Any] = {}
    for name, value in item.items():
        spec = names.get(name)
        if spec is None:
            continue
        field, reader = spec
        # The usual types read here, without a call for each attribute; any other by its reader.
        if reader is _text:
            text = value.get("S")
            if text is not None:
                fields[field] = text
                continue
        elif reader is _real:
            text = value.get("N")
            if text is not None:
                fields[field] = float(text)
                continue
        elif reader is _whole:
            text = value.get("N")
            if text is not None and text.isdigit():
                fields[field] = int(text)
                continue
        if "NULL" not in value:
            fields[field] = reader(value)
    return fields


def _attempt(item: Mapping[str, Any]) -> Attempt:
    fields = _fields(item, _ATTEMPT_FIELDS)
    fields.setdefault("claim", fields["number"])
    fields.setdefault("provider", "")
    fields.setdefault("claimed_at", 0.0)
    return from_fields(Attempt, fields)


def decode(item: Mapping[str, Any]) -> Job:
    """A job from its item (as GetItem, Query or an index returns it)."""
    fields = _fields(item, _JOB_FIELDS)
    attempts = tuple(_attempt(value["M"]) for value in item.get("attempts", {}).get("L", ()))
    fields["attempts"] = attempts
    fields.setdefault("attempt_count", len(attempts))
    fields.setdefault("claims", len(attempts))
    return from_fields(Job, fields)


# --- the scheduler's items -------------------------------------------------------------------


@dataclass(frozen=True)
class Slots:
    """Jobs holding a task slot, and the account's limit as ECS last stated it (if it did)."""

    active: int = 0
    account_limit: int | None = None
    limit_seen_at: float | None = None


@dataclass(frozen=True)
class Stats:
    """Totals since the table was made, and where the current batch began (for progress)."""

    recorded: int = 0
    succeeded: int = 0
    failed: int = 0
    batch_since: float | None = None
    batch_recorded: int = 0
    batch_succeeded: int = 0
    batch_failed: int = 0

    @property
    def in_progress(self) -> int:
        return max(0, self.recorded - self.succeeded - self.failed)


# --- the store -------------------------------------------------------------------------------


def _stats(item: Mapping[str, Any]) -> Stats:
    raw = {name: _plain(value) for name, value in item.items()}
    return Stats(
        recorded=int(raw.get("recorded", 0)),
        succeeded=int(raw.get("succeeded", 0)),
        failed=int(raw.get("failed", 0)),
        batch_since=_optional_float(raw, "batchSince"),
        batch_recorded=int(raw.get("batchRecorded", 0)),
        batch_succeeded=int(raw.get("batchSucceeded", 0)),
        batch_failed=int(raw.get("batchFailed", 0)),
    )


def slots_update(
    table: str, delta: int, limit: int | None, account_limit_seen_at: float | None
) -> dict[str, Any]:
    """The slots item's part of a transaction that takes (+1) or frees (-1) a slot."""
    slots: dict[str, Any] = {
        "TableName": table,
        "Key": SLOTS,
        "UpdateExpression": "ADD #active :delta",
        "ExpressionAttributeNames": {"#active": "active"},
        "ExpressionAttributeValues": {":delta": _number(delta)},
    }
    if delta > 0 and limit is not None:
        slots["ConditionExpression"] = "attribute_not_exists(#active) OR #active < :limit"
        slots["ExpressionAttributeValues"][":limit"] = _number(limit)
    if account_limit_seen_at is not None:
        # The slots still taken once this one is freed (the update reads the item as it was).
        slots["UpdateExpression"] += " SET #limit = #active + :delta, #seen = :seen"
        slots["ExpressionAttributeNames"] |= {"#limit": "accountLimit", "#seen": "limitSeenAt"}
        slots["ExpressionAttributeValues"][":seen"] = _number(account_limit_seen_at)
    return slots


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class JobStore:
    """The table, through one DynamoDB client; every method names what failed."""

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table: str,
        *,
        record_days: int,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.record_days = record_days
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets

    def _pause(self, attempt: int) -> None:
        self._sleep(0.025 * 2**attempt * self._rng.uniform(0.5, 1.5))

    def _encode(self, job: Job) -> dict[str, Any]:
        return encode(job, record_days=self.record_days)

    # --- jobs ----------------------------------------------------------------------------------

    def create(self, job: Job) -> tuple[Job, bool]:
        """Record a new job; (the record, True) if it is new, (the existing one, False) if an
        earlier delivery of the same upload recorded it."""
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=self._encode(job),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise StoreError(f"recording the job of {job.location} failed: {error}") from error
        except BotoCoreError as error:
            raise StoreError(f"recording the job of {job.location} failed: {error}") from error
        else:
            return job, True
        existing = self.get(job.bucket, job.key, job.job_id)
        if existing is None:  # deleted (expired) between the two calls: record it again
            return self.create(job)
        return existing, False

    def get(self, bucket: str, key: str, job_id: str) -> Job | None:
        try:
            answer = self.dynamodb.get_item(
                TableName=self.table, Key=job_key(bucket, key, job_id), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            raise StoreError(f"reading the job of s3://{bucket}/{key} failed: {error}") from error
        item = answer.get("Item")
        return None if item is None else decode(item)

    def reread(self, job: Job) -> Job | None:
        return self.get(job.bucket, job.key, job.job_id)

    def apply(
        self,
        before: Job,
        after: Job,
        *,
        limit: int | None = None,
        account_limit_seen_at: float | None = None,
    ) -> Job:
        """Write `after` over `before` if the record is still `before`; returns it as written.

        When the change takes a slot, it is refused with Full unless fewer than `limit` (None:
        any number) are taken; Conflict when the record changed meanwhile. With
        `account_limit_seen_at`, the change frees a slot ECS refused at the account's limit
        then: the slots that stay taken are noted as that limit, in the same write.
        """
        written = written_over(before, after)
        expression, names, values = changes(before, written, record_days=self.record_days)
        names["#version"] = "version"
        values[":expected"] = _number(before.version)
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": job_key(before.bucket, before.key, before.job_id),
            "UpdateExpression": expression,
            "ConditionExpression": "#version = :expected",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        delta = slot_change(before, written)
        if delta == 0:
            self._update(update, before)
        else:
            slots = slots_update(self.table, delta, limit, account_limit_seen_at)
            self._transact(update, slots, before)
        return written

    def _update(self, update: dict[str, Any], job: Job) -> None:
        try:
            self.dynamodb.update_item(**update)
        except ClientError as error:
            # A transaction on the job in progress (a claim, a stop) is a change as well.
            if _code(error) in ("ConditionalCheckFailedException", "TransactionConflictException"):
                raise Conflict(job.location) from None
            raise StoreError(f"writing the job of {job.location} failed: {error}") from error
        except BotoCoreError as error:
            raise StoreError(f"writing the job of {job.location} failed: {error}") from error

    def _transact(self, update: dict[str, Any], slots: dict[str, Any], job: Job) -> None:
        job_update = {name: value for name, value in update.items() if name != "TableName"}
        job_update["TableName"] = self.table
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                items: list[Any] = [{"Update": job_update}, {"Update": slots}]
                self.dynamodb.transact_write_items(TransactItems=items)
            except ClientError as error:
                if _code(error) != "TransactionCanceledException":
                    raise StoreError(
                        f"writing the job of {job.location} failed: {error}"
                    ) from error
                cancelled: list[Any] = list(error.response.get("CancellationReasons", []))
                reasons = [str(reason.get("Code", "None")) for reason in cancelled]
                if reasons[:1] == ["ConditionalCheckFailed"]:
                    raise Conflict(job.location) from None
                if reasons[1:2] == ["ConditionalCheckFailed"]:
                    raise Full(job.location) from None
                if "TransactionConflict" in reasons and attempt < CONFLICT_RETRIES:
                    self._pause(attempt)
                    continue
                raise StoreError(f"writing the job of {job.location} failed: {error}") from error
            except BotoCoreError as error:
                raise StoreError(f"writing the job of {job.location} failed: {error}") from error
            return

    # --- queries ---------------------------------------------------------------------------------

    def _query(self, **request: Any) -> Iterator[dict[str, Any]]:
        """Every item a query matches, page by page (stops at `Limit` items when given)."""
        wanted = request.pop("Limit", None)
        found = 0
        start: dict[str, Any] | None = None
        while True:
            page_size = QUERY_PAGE if wanted is None else min(QUERY_PAGE, wanted - found)
            call = {**request, "TableName": self.table, "Limit": page_size}
            if start is not None:
                call["ExclusiveStartKey"] = start
            try:
                answer = self.dynamodb.query(**call)
            except (ClientError, BotoCoreError) as error:
                raise StoreError(f"querying the job table failed: {error}") from error
            for item in answer.get("Items", []):
                found += 1
                yield item
            start = answer.get("LastEvaluatedKey")
            if start is None or (wanted is not None and found >= wanted):
                return

    def oldest_waiting(self, *, ready_by: float, wanted: int) -> list[Job]:
        """The `wanted` oldest jobs waiting and ready by `ready_by`, oldest first, from every
        shard. The index is eventually consistent: a job may be listed that was just claimed
        (its claim then fails on the version) or miss one just recorded."""
        return self._earliest(WAITING_INDEX, by=ready_by, wanted=wanted)

    def due_retries(self, *, by: float, wanted: int) -> list[Job]:
        """Retries whose delay is over by `by`, the longest due first."""
        return self._earliest(DELAYED_INDEX, by=by, wanted=wanted)

    def _earliest(self, index: str, *, by: float, wanted: int) -> list[Job]:
        """The `wanted` jobs of an index whose sort key is at most `by`, earliest first."""
        shard_key, sort = INDEXES[index]
        items: list[dict[str, Any]] = []
        for number in range(SHARDS):
            items += self._query(
                IndexName=index,
                KeyConditionExpression="#s = :s AND #r <= :r",
                ExpressionAttributeNames={"#s": shard_key, "#r": sort},
                ExpressionAttributeValues={
                    ":s": {"S": f"{index[0]}{number}"},
                    ":r": _number(by),
                },
                Limit=wanted,
            )
        items.sort(key=lambda item: (float(item[sort]["N"]), item[SORT_KEY]["S"]))
        return [decode(item) for item in items[:wanted]]

    def needing_sweep(self) -> list[Job]:
        """Every job with a task under way, and every failure not reported yet."""
        shard_key, _ = INDEXES[SWEEP_INDEX]
        jobs: list[Job] = []
        for number in range(SHARDS):
            jobs += [
                decode(item)
                for item in self._query(
                    IndexName=SWEEP_INDEX,
                    KeyConditionExpression="#s = :s",
                    ExpressionAttributeNames={"#s": shard_key},
                    ExpressionAttributeValues={":s": {"S": f"{SWEEP_INDEX[0]}{number}"}},
                )
            ]
        return jobs

    def jobs_of(self, bucket: str, key: str) -> list[Job]:
        """Every job of one key (its uploads, one per version), oldest first."""
        return sorted(
            (
                decode(item)
                for item in self._query(
                    KeyConditionExpression="#p = :p",
                    ExpressionAttributeNames={"#p": PARTITION_KEY},
                    ExpressionAttributeValues={":p": {"S": f"upload#{bucket}/{key}"}},
                )
            ),
            key=lambda job: job.recorded_at,
        )

    def recent(self, *, since: float, until: float) -> Iterator[Job]:
        """Jobs recorded between `since` and `until`, newest first (`jobctl jobs`)."""
        shard_key, sort = INDEXES[RECENT_INDEX]
        hour = until - until % 3600
        while hour >= since - since % 3600:
            keys = [
                {PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]}
                for item in self._query(
                    IndexName=RECENT_INDEX,
                    KeyConditionExpression="#h = :h AND #t BETWEEN :since AND :until",
                    ExpressionAttributeNames={"#h": shard_key, "#t": sort},
                    ExpressionAttributeValues={
                        ":h": {"S": _hour(hour)},
                        ":since": _number(since),
                        ":until": _number(until),
                    },
                    ScanIndexForward=False,
                )
            ]
            yield from sorted(self._get_many(keys), key=lambda job: -job.recorded_at)
            hour -= 3600

    def _get_many(self, keys: list[dict[str, Any]]) -> Iterable[Job]:
        for start in range(0, len(keys), BATCH_GET):
            pending: list[dict[str, Any]] = keys[start : start + BATCH_GET]
            while pending:
                try:
                    answer = self.dynamodb.batch_get_item(
                        RequestItems={self.table: {"Keys": pending}}
                    )
                except (ClientError, BotoCoreError) as error:
                    raise StoreError(f"reading jobs failed: {error}") from error
                yield from (decode(item) for item in answer["Responses"].get(self.table, []))
                unprocessed: Any = answer.get("UnprocessedKeys") or {}
                pending = list(unprocessed.get(self.table, {}).get("Keys", []))

    # --- the scheduler's items -------------------------------------------------------------------

    def slots(self) -> Slots:
        try:
            answer = self.dynamodb.get_item(TableName=self.table, Key=SLOTS, ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise StoreError(f"reading the task slots failed: {error}") from error
        raw = {name: _plain(value) for name, value in answer.get("Item", {}).items()}
        return Slots(
            active=int(raw.get("active", 0)),
            account_limit=_optional_int(raw, "accountLimit"),
            limit_seen_at=_optional_float(raw, "limitSeenAt"),
        )

    def raise_account_limit(self, limit: int, raised: int, now: float) -> None:
        """ECS started a task beyond the limit it stated (`limit`): take `raised` for it from
        now, unless another invocation noted a newer limit meanwhile."""
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=SLOTS,
                UpdateExpression="SET #limit = :raised, #seen = :now",
                ConditionExpression="#limit = :limit",
                ExpressionAttributeNames={"#limit": "accountLimit", "#seen": "limitSeenAt"},
                ExpressionAttributeValues={
                    ":limit": _number(limit),
                    ":raised": _number(raised),
                    ":now": _number(now),
                },
            )
        except (ClientError, BotoCoreError) as error:
            logger.info(json.dumps({"slots": "account limit kept", "why": str(error)}))

    def stats(self) -> Stats:
        try:
            answer = self.dynamodb.get_item(TableName=self.table, Key=STATS, ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise StoreError(f"reading the job totals failed: {error}") from error
        return _stats(answer.get("Item", {}))

    def count(self, **deltas: int) -> Stats | None:
        """Add to the totals (recorded=1, failed=-1, ...) and return them; a failure (None) only
        makes them approximate."""
        names = {f"#c{i}": name for i, name in enumerate(deltas)}
        values = {f":c{i}": _number(delta) for i, delta in enumerate(deltas.values())}
        try:
            answer = self.dynamodb.update_item(
                TableName=self.table,
                Key=STATS,
                UpdateExpression="ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(deltas))),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as error:
            logger.warning(json.dumps({"stats": "not counted", "error": str(error)}))
            return None
        return _stats(answer.get("Attributes", {}))

    def start_batch(self, stats: Stats, now: float) -> None:
        """A batch begins (for `jobctl status`): `stats` are the totals before its first job."""
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=STATS,
                UpdateExpression="SET #s = :s, #r = :r, #ok = :ok, #f = :f",
                ExpressionAttributeNames={
                    "#s": "batchSince",
                    "#r": "batchRecorded",
                    "#ok": "batchSucceeded",
                    "#f": "batchFailed",
                },
                ExpressionAttributeValues={
                    ":s": _number(now),
                    ":r": _number(stats.recorded),
                    ":ok": _number(stats.succeeded),
                    ":f": _number(stats.failed),
                },
            )
        except (ClientError, BotoCoreError) as error:
            logger.warning(json.dumps({"stats": "batch not marked", "error": str(error)}))
