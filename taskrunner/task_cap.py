"""The task cap: never more than MAX_CONCURRENT_TASKS tasks of this job pending or running.

Counting and starting must be one step: two invocations that each count 99 of 100 at the same
moment would each start one. So a lease on one DynamoDB item makes invocations take turns.
The holder counts the job's tasks (ListTasks with desiredStatus RUNNING lists PENDING ones too),
adds what holders started in the last minute (ECS lists a new task only after a moment:
eventual consistency) unless DescribeTasks already calls them STOPPED, starts as many uploads
as fit, and writes what it started back with the release. An upload whose RunTask answer was
lost keeps a reservation, counted as a task, until its retry learns from ECS (same clientToken)
whether it started: the cap holds either way.

The same table keeps a ledger of started uploads for 15 days. ECS remembers a clientToken for
24 hours only, and an upload delivered twice may have its twin wait in the backlog far longer
than that when a cap keeps a big batch waiting; the ledger tells the twin its task started.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from outcomes import RecordResult
from runner_settings import RunnerSettings
from services import Services
from upload_events import Upload, client_token

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef
    from mypy_boto3_ecs.type_defs import ListTasksRequestTypeDef

logger = logging.getLogger("taskrunner")

LOCK_KEY = "cap-lock"
STARTED_PREFIX = "started#"
# ECS may not list a task it started this recently; the holder counts it from the lock item.
LISTING_LAG_SECONDS = 60
# How long a lease outlives the invocation that took it, so it cannot lapse while its holder
# still works; and the shortest lease, which covers the listing lag if a release is lost.
LEASE_MARGIN_SECONDS = 30
MIN_LEASE_SECONDS = 90
LEASE_WITHOUT_CONTEXT_SECONDS = 300  # a redrive calling in-process, with no Lambda clock
# Taking turns: a few tries within seconds, then the uploads wait in the backlog instead.
LOCK_ATTEMPTS = 8
LOCK_RETRY_SECONDS = (0.1, 0.5)
# A lost answer keeps its place until its retry asks ECS, which must be within the 24 hours ECS
# remembers the clientToken; the retry comes far sooner (within the backlog's longest delay,
# again and again), so only an upload that never comes back holds a place this long.
RESERVATION_SECONDS = 23 * 3600
UNTRACKED = "untracked-"  # an upload with no identity: no token, so no ledger entry
LEDGER_DAYS = 15  # beyond the 14 days an upload can wait in the backlog
LIST_PAGE = 100  # ListTasks's largest page
DESCRIBE_TASKS_PAGE = 100  # DescribeTasks's limit
BATCH_GET_KEYS = 100  # BatchGetItem's limit

ACQUIRE_UPDATE = "SET holder = :me, leaseUntil = :until"
ACQUIRE_CONDITION = "attribute_not_exists(leaseUntil) OR leaseUntil < :now"
RELEASE_UPDATE = "SET inflight = :inflight, leaseUntil = :zero"
RELEASE_CONDITION = "holder = :me"


@dataclass
class InFlight:
    """What the lock item remembers: token -> (task ARN, or "" for a reservation; until)."""

    entries: dict[str, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None, now: float) -> InFlight:
        try:
            raw = json.loads(text) if text else {}
        except json.JSONDecodeError:
            raw = {}
        entries = {
            str(key): (str(value[0]), float(value[1]))
            for key, value in (raw.items() if isinstance(raw, dict) else ())
            if isinstance(value, list) and len(value) == 2 and float(value[1]) > now
        }
        return cls(entries)

    def dump(self) -> str:
        return json.dumps({key: [arn, until] for key, (arn, until) in self.entries.items()})

    @property
    def arns(self) -> set[str]:
        return {arn for arn, _ in self.entries.values() if arn}

    @property
    def reservations(self) -> set[str]:
        return {key for key, (arn, _) in self.entries.items() if not arn}

    def count(self, listed: set[str]) -> int:
        """Tasks pending or running: the listed ones, the recent ones, the reservations."""
        return len(listed | self.arns) + len(self.reservations)


Starter = Callable[[Upload], RecordResult]  # one RunTask, as task_starter makes it


class TaskCap:
    def __init__(self, settings: RunnerSettings, services: Services) -> None:
        assert settings.state_table is not None  # settings require it with a cap
        self.settings = settings
        self.services = services
        self.cap = settings.max_concurrent_tasks
        self.table = settings.state_table
        self.holder = uuid.uuid4().hex

    def start(
        self,
        uploads: list[Upload],
        keys: list[str],
        start_one: Starter,
        remaining_ms: Callable[[], int] | None,
    ) -> list[RecordResult]:
        """Start what fits under the cap, in order; the rest are `waiting`, saying why."""
        results: dict[int, RecordResult] = {}
        if not self._may_fit(keys):
            # The usual case while a big batch waits: no ledger read, no turn taken. A twin
            # that waits here meets the ledger when its turn comes.
            why = f"the cap of {self.cap} tasks pending or running is reached"
            return [_waits_its_turn(upload, why) for upload in uploads]
        known = self.started_earlier(key for key in keys if not key.startswith(UNTRACKED))
        for index, key in enumerate(keys):
            if key in known:
                results[index] = RecordResult(
                    "already-started",
                    uploads[index],
                    task_arn=known[key] or None,
                    reason="started earlier (the cap's ledger)",
                )
        pending = [index for index in range(len(uploads)) if index not in results]
        if pending:
            in_flight = self.acquire(lease_seconds(remaining_ms))
            if in_flight is None:
                why = "other invocations are starting tasks; it waits for its turn"
                results |= {i: _waits_its_turn(uploads[i], why) for i in pending}
            else:
                try:
                    self.forget_stopped(in_flight)
                    # Listed once: tasks that stop meanwhile only make the count cautious.
                    listed = self.listed_tasks(self.cap + len(in_flight.entries) + 1)
                    for index in pending:
                        results[index] = self._start_one(
                            in_flight, listed, uploads[index], keys[index], start_one
                        )
                finally:
                    self.release(in_flight)
        return [results[index] for index in range(len(uploads))]

    def _may_fit(self, keys: list[str]) -> bool:
        """A first look without the lock. At the cap, the usual case while a big batch waits,
        the uploads wait without every invocation taking its turn."""
        in_flight = self.peek()
        if not in_flight.reservations.isdisjoint(keys):
            return True  # its own place is kept: it needs no free one
        listed = self.listed_tasks(self.cap + len(in_flight.entries) + 1)
        if in_flight.count(listed) < self.cap:
            return True
        if not in_flight.arns - listed:
            return False
        # Some counted only as recent starts: short tasks may have stopped already.
        self.forget_stopped(in_flight)
        return in_flight.count(listed) < self.cap

    def _start_one(
        self,
        in_flight: InFlight,
        listed: set[str],
        upload: Upload,
        key: str,
        start_one: Starter,
    ) -> RecordResult:
        """Holding the lock: start `upload` if it fits, and account for what happened."""
        reserved = key in in_flight.reservations
        if not reserved and in_flight.count(listed) >= self.cap:
            return _waits_its_turn(
                upload, f"the cap of {self.cap} tasks pending or running is reached"
            )
        result = start_one(upload)
        now = self.services.clock()
        if result.has_task and result.task_arn:
            in_flight.entries[key] = (result.task_arn, now + LISTING_LAG_SECONDS)
            if not key.startswith(UNTRACKED):
                self.record_started(key, result.task_arn)
        elif result.maybe_started:
            # Its task may be running: keep its place until its retry asks ECS.
            until = now + RESERVATION_SECONDS
            in_flight.entries[key] = ("", until)
        else:
            # Started nothing (or ECS named no task): it holds no place any more.
            in_flight.entries.pop(key, None)
        return result

    # --- the ledger of started uploads --------------------------------------------------------

    def started_earlier(self, tokens: Iterable[str]) -> dict[str, str]:
        """token -> task ARN for uploads the ledger knows started (a failed read: none known)."""
        wanted = sorted(set(tokens))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), BATCH_GET_KEYS):
            keys: list[dict[str, AttributeValueTypeDef]] = [
                {"pk": {"S": STARTED_PREFIX + token}}
                for token in wanted[start : start + BATCH_GET_KEYS]
            ]
            try:
                answer = self.services.dynamodb.batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
                )
            except (ClientError, BotoCoreError) as error:
                # Not knowing is safe within ECS's 24 h token window, where RunTask dedupes.
                logger.warning(json.dumps({"ledger": "unreadable", "error": str(error)}))
                continue
            for item in answer.get("Responses", {}).get(self.table, []):
                token = item["pk"]["S"].removeprefix(STARTED_PREFIX)
                found[token] = item.get("taskArn", {}).get("S", "")
        return found

    def record_started(self, token: str, task_arn: str) -> None:
        expires = int(self.services.clock()) + LEDGER_DAYS * 24 * 3600
        try:
            self.services.dynamodb.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": STARTED_PREFIX + token},
                    "taskArn": {"S": task_arn},
                    "expiresAt": {"N": str(expires)},
                },
            )
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                json.dumps({"ledger": "not written", "token": token, "error": str(error)})
            )

    # --- counting -----------------------------------------------------------------------------

    def listed_tasks(self, enough: int) -> set[str]:
        """ARNs of this job's PENDING and RUNNING tasks; stops once `enough` are found."""
        family = self.settings.task_definition_arn.rsplit("/", 1)[-1].split(":", 1)[0]
        arns: set[str] = set()
        token: str | None = None
        while True:
            request: ListTasksRequestTypeDef = {
                "cluster": self.settings.cluster_arn,
                "family": family,
                "desiredStatus": "RUNNING",
                "maxResults": LIST_PAGE,
            }
            if token:
                request["nextToken"] = token
            page = self.services.ecs.list_tasks(**request)
            arns.update(page.get("taskArns", []))
            token = page.get("nextToken")
            if not token or len(arns) >= enough:
                return arns

    def forget_stopped(self, in_flight: InFlight) -> None:
        """Drop recent starts that ECS already calls STOPPED: a short task frees its place at
        once, not a minute later. A task ECS does not know yet (MISSING) still counts."""
        arns = sorted(in_flight.arns)
        stopped: set[str] = set()
        for start in range(0, len(arns), DESCRIBE_TASKS_PAGE):
            answer = self.services.ecs.describe_tasks(
                cluster=self.settings.cluster_arn, tasks=arns[start : start + DESCRIBE_TASKS_PAGE]
            )
            stopped |= {
                task["taskArn"]
                for task in answer.get("tasks", [])
                if task.get("lastStatus") == "STOPPED" and "taskArn" in task
            }
        for key, (arn, _) in list(in_flight.entries.items()):
            if arn in stopped:
                del in_flight.entries[key]

    def peek(self) -> InFlight:
        answer = self.services.dynamodb.get_item(
            TableName=self.table, Key={"pk": {"S": LOCK_KEY}}, ConsistentRead=True
        )
        item = answer.get("Item", {})
        return InFlight.parse(item.get("inflight", {}).get("S"), self.services.clock())

    # --- taking turns -------------------------------------------------------------------------

    def acquire(self, lease_seconds: float) -> InFlight | None:
        """The lock, with what earlier holders left in it; None when others keep it."""
        for attempt in range(LOCK_ATTEMPTS):
            now = self.services.clock()
            try:
                answer = self.services.dynamodb.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": LOCK_KEY}},
                    UpdateExpression=ACQUIRE_UPDATE,
                    ConditionExpression=ACQUIRE_CONDITION,
                    ExpressionAttributeValues={
                        ":me": {"S": self.holder},
                        ":until": {"N": _number(now + lease_seconds)},
                        ":now": {"N": _number(now)},
                    },
                    ReturnValues="ALL_NEW",
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                if attempt + 1 < LOCK_ATTEMPTS:
                    self.services.sleep(self.services.rng.uniform(*LOCK_RETRY_SECONDS))
                continue
            attributes = answer.get("Attributes", {})
            return InFlight.parse(attributes.get("inflight", {}).get("S"), now)
        return None

    def release(self, in_flight: InFlight) -> None:
        try:
            self.services.dynamodb.update_item(
                TableName=self.table,
                Key={"pk": {"S": LOCK_KEY}},
                UpdateExpression=RELEASE_UPDATE,
                ConditionExpression=RELEASE_CONDITION,
                ExpressionAttributeValues={
                    ":inflight": {"S": in_flight.dump()},
                    ":zero": {"N": "0"},
                    ":me": {"S": self.holder},
                },
            )
        except (ClientError, BotoCoreError) as error:
            # The lease lapses by itself; what this holder started is listed by ECS by then.
            logger.error(json.dumps({"lock": "not released", "error": str(error)}))  # noqa: TRY400 - one line, no traceback


def _waits_its_turn(upload: Upload, why: str) -> RecordResult:
    return RecordResult("waiting", upload, reason=why, full=True)


def lease_seconds(remaining_ms: Callable[[], int] | None) -> float:
    if remaining_ms is None:
        return LEASE_WITHOUT_CONTEXT_SECONDS
    return max(MIN_LEASE_SECONDS, remaining_ms() / 1000 + LEASE_MARGIN_SECONDS)


def upload_key(upload: Upload) -> str:
    """What the cap knows an upload by: its clientToken, or a key of its own if it has none."""
    return client_token(upload) or f"{UNTRACKED}{uuid.uuid4().hex}"


def _number(value: float) -> str:
    return f"{value:.3f}"
