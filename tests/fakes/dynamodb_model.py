"""A model of DynamoDB for the virtual-clock simulation: tables, global secondary indexes,
condition and update expressions, transactions, and the capacity units each request uses.

What it implements, as DynamoDB's developer guide describes it:
- items keyed by a partition key and a sort key; PutItem, GetItem, UpdateItem, Query (on the
  table or an index, with a key condition, Limit, ExclusiveStartKey and ScanIndexForward),
  BatchGetItem and TransactWriteItems (all-or-nothing, `CancellationReasons` naming each item's
  fate);
- expressions: comparisons, BETWEEN, IN, AND/OR/NOT, parentheses, attribute_exists,
  attribute_not_exists, begins_with, size; SET (with `+`, `-`, if_not_exists, list_append),
  REMOVE, ADD; names and values through `#placeholders` and `:placeholders`;
- sparse indexes: an item is in an index only when it has the index's key attributes; an index
  is eventually consistent: a change reaches it `index_lag` seconds after the write;
- transactions that overlap in time on one item conflict (TransactionConflict), as DynamoDB's
  optimistic concurrency control makes them;
- capacity units: a write costs 1 per KB of item (twice in a transaction), plus one write per
  index it changes; a read 1 per 4 KB (half for an eventually consistent one), rounded up.

The same expressions run against moto's DynamoDB in tests/taskrunner/test_job_store.py, so the
model and a real implementation are held to one behaviour.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sortedcontainers import SortedList

Item = dict[str, Any]
Value = Mapping[str, Any]  # {"S": ...}, {"N": ...}, ...


class DynamoError(Exception):
    """An error answer (the client turns it into botocore's ClientError)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra = extra

    @property
    def retryable(self) -> bool:
        return self.code in ("ProvisionedThroughputExceededException", "ThrottlingException")


# --- expressions -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<op><>|<=|>=|=|<|>|\(|\)|,|\+|-|\.|\[|\])|(?P<word>[#:]?[A-Za-z_][A-Za-z0-9_]*)|"
    r"(?P<int>\d+))"
)
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"}


def _tokens(text: str) -> list[str]:
    found, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise DynamoError("ValidationException", f"invalid expression near {text[position:]!r}")
        token = match.group("op") or match.group("word") or match.group("int")
        found.append(token.upper() if token.upper() in _KEYWORDS else token)
        position = match.end()
    return found


@dataclass
class _Context:
    names: Mapping[str, str]
    values: Mapping[str, Value]


Getter = Callable[[Item, _Context], Value | None]
Check = Callable[[Item, _Context], bool]


def _number(value: Value) -> Decimal:
    return Decimal(value["N"])


def _compare(left: Value | None, op: str, right: Value | None) -> bool:
    if left is None or right is None:
        return op == "<>" and not (left is None and right is None)
    if "N" in left and "N" in right:
        a: Any = _number(left)
        b: Any = _number(right)
    elif "S" in left and "S" in right:
        a, b = left["S"], right["S"]
    else:
        same = dict(left) == dict(right)
        return bool({"=": same, "<>": not same}.get(op, False))
    return bool(
        {
            "=": a == b,
            "<>": a != b,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[op]
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise DynamoError("ValidationException", f"expected {expected!r}, got {token!r}")
        self.at += 1
        return token

    def done(self) -> bool:
        return self.at >= len(self.tokens)

    # paths and operands

    def path(self) -> Callable[[_Context], str]:
        token = self.take()
        if token.startswith(":") or token in _KEYWORDS:
            raise DynamoError("ValidationException", f"expected an attribute, got {token!r}")
        if self.peek() in (".", "["):
            raise DynamoError("ValidationException", "nested paths are not modelled")
        if token.startswith("#"):
            return lambda context: context.names[token]
        return lambda context: token

    def operand(self) -> Getter:
        token = self.peek()
        if token is None:
            raise DynamoError("ValidationException", "expression ends early")
        if token.startswith(":"):
            self.take()
            return lambda item, context: context.values[token]
        if token == "size":
            self.take()
            self.take("(")
            name = self.path()
            self.take(")")

            def size(item: Item, context: _Context) -> Value | None:
                value = item.get(name(context))
                if value is None:
                    return None
                inner = next(iter(value.values()))
                return {"N": str(len(inner))}

            return size
        name = self.path()
        return lambda item, context: item.get(name(context))

    # conditions

    def condition(self) -> Check:
        left = self.conjunction()
        while self.peek() == "OR":
            self.take()
            right = self.conjunction()
            left = functools.partial(
                lambda a, b, item, context: a(item, context) or b(item, context), left, right
            )
        return left

    def conjunction(self) -> Check:
        left = self.negation()
        while self.peek() == "AND":
            self.take()
            right = self.negation()
            left = functools.partial(
                lambda a, b, item, context: a(item, context) and b(item, context), left, right
            )
        return left

    def negation(self) -> Check:
        if self.peek() == "NOT":
            self.take()
            inner = self.negation()
            return lambda item, context: not inner(item, context)
        return self.primary()

    def primary(self) -> Check:
        token = self.peek()
        if token == "(":
            self.take()
            inner = self.condition()
            self.take(")")
            return inner
        if token in ("attribute_exists", "attribute_not_exists"):
            self.take()
            self.take("(")
            name = self.path()
            self.take(")")
            present = token == "attribute_exists"
            return lambda item, context: (name(context) in item) == present
        if token == "begins_with":
            self.take()
            self.take("(")
            subject = self.operand()
            self.take(",")
            prefix = self.operand()
            self.take(")")

            def begins(item: Item, context: _Context) -> bool:
                value, start = subject(item, context), prefix(item, context)
                return bool(value and start and value.get("S", "").startswith(start.get("S", "")))

            return begins
        left = self.operand()
        op = self.take()
        if op == "BETWEEN":
            low = self.operand()
            self.take("AND")
            high = self.operand()
            return lambda item, context: (
                _compare(left(item, context), ">=", low(item, context))
                and _compare(left(item, context), "<=", high(item, context))
            )
        if op == "IN":
            self.take("(")
            options = [self.operand()]
            while self.peek() == ",":
                self.take()
                options.append(self.operand())
            self.take(")")
            return lambda item, context: any(
                _compare(left(item, context), "=", option(item, context)) for option in options
            )
        if op not in ("=", "<>", "<", "<=", ">", ">="):
            raise DynamoError("ValidationException", f"unknown operator {op!r}")
        right = self.operand()
        return lambda item, context: _compare(left(item, context), op, right(item, context))

    # updates

    def set_value(self) -> Getter:
        first = self.set_operand()
        if self.peek() in ("+", "-"):
            sign = self.take()
            second = self.set_operand()

            def arithmetic(item: Item, context: _Context) -> Value:
                a, b = first(item, context), second(item, context)
                if a is None or b is None or "N" not in a or "N" not in b:
                    raise DynamoError("ValidationException", "arithmetic needs two numbers")
                result = _number(a) + _number(b) if sign == "+" else _number(a) - _number(b)
                return {"N": str(result)}

            return arithmetic
        return first

    def set_operand(self) -> Getter:
        token = self.peek()
        if token in ("if_not_exists", "list_append"):
            self.take()
            self.take("(")
            a = self.set_operand()
            self.take(",")
            b = self.set_operand()
            self.take(")")
            if token == "if_not_exists":
                return lambda item, context: a(item, context) or b(item, context)
            return lambda item, context: {
                "L": [*(a(item, context) or {"L": []})["L"], *(b(item, context) or {"L": []})["L"]]
            }
        return self.operand()

    def update(self) -> Callable[[Item, _Context], None]:
        actions: list[Callable[[Item, _Context], None]] = []
        while not self.done():
            clause = self.take()
            while True:
                name = self.path()
                if clause == "SET":
                    self.take("=")
                    value = self.set_value()
                    actions.append(functools.partial(_set, name, value))
                elif clause == "REMOVE":
                    actions.append(functools.partial(_remove, name))
                elif clause == "ADD":
                    value = self.operand()
                    actions.append(functools.partial(_add, name, value))
                else:
                    raise DynamoError("ValidationException", f"{clause} is not modelled")
                if self.peek() != ",":
                    break
                self.take()

        def apply(item: Item, context: _Context) -> None:
            # Every value is computed from the item as it was: DynamoDB evaluates first.
            before = dict(item)
            for action in actions:
                action(before, item, context)  # type: ignore[call-arg, arg-type]

        return apply


def _set(
    name: Callable[[_Context], str], value: Getter, before: Item, item: Item, context: _Context
) -> None:
    computed = value(before, context)
    if computed is None:
        raise DynamoError("ValidationException", "SET to an attribute that does not exist")
    item[name(context)] = computed


def _remove(name: Callable[[_Context], str], before: Item, item: Item, context: _Context) -> None:
    item.pop(name(context), None)


def _add(
    name: Callable[[_Context], str], value: Getter, before: Item, item: Item, context: _Context
) -> None:
    attribute = name(context)
    delta = value(before, context)
    current = before.get(attribute)
    if delta is None or "N" not in delta:
        raise DynamoError("ValidationException", "ADD is modelled for numbers only")
    total = (_number(current) if current is not None else Decimal(0)) + _number(delta)
    item[attribute] = {"N": str(total)}


@functools.lru_cache(maxsize=4096)
def parse_condition(text: str) -> Check:
    parser = _Parser(text)
    check = parser.condition()
    if not parser.done():
        raise DynamoError("ValidationException", f"unexpected {parser.peek()!r} in {text!r}")
    return check


@functools.lru_cache(maxsize=4096)
def parse_update(text: str) -> Callable[[Item, _Context], None]:
    return _Parser(text).update()


# --- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str | None
    projection: str = "ALL"  # or KEYS_ONLY


def _scalar(value: Value) -> Any:
    return _number(value) if "N" in value else value.get("S", "")


def _attribute_size(name: str, value: Value) -> int:
    """An attribute's part of its item's size in bytes, as DynamoDB counts it (names and
    values). The item's repr is a close, cheap stand-in for its JSON, and a dict's repr is its
    braces and, for each attribute, its name, its value and 4 characters, less the last
    separator: an item's size is the sum of its attributes' (2, the braces, for none)."""
    return len(repr(name)) + len(repr(value)) + 4  # 'name': value, and the ", " after it


def _measured(
    before: Mapping[str, Any] | None, known: Mapping[str, int] | None, after: Mapping[str, Any]
) -> dict[str, int]:
    """Each attribute's size in `after`, a write over `before` whose attributes' sizes are
    `known`: only what the write changed is measured again. Most writes change a few
    attributes of twenty, and the largest (a job's attempts) at most once."""
    if before is None or known is None:
        return {name: _attribute_size(name, value) for name, value in after.items()}
    sizes = dict(known)
    for name, value in after.items():
        if before.get(name) is not value:
            sizes[name] = _attribute_size(name, value)
    for name in before:
        if name not in after:
            del sizes[name]
    return sizes


# An index's entry for an item before and after a write: (hash value, range value) or None.
_Change = tuple["Index", tuple[str, Any] | None, tuple[str, Any] | None]
# Both sides of a change that kept the entry it had (compared only with itself: no change).
_KEPT: tuple[str, Any] = ("", None)


@dataclass
class Table:
    name: str
    hash_key: str = "pk"
    range_key: str | None = "sk"
    indexes: dict[str, Index] = field(default_factory=dict)
    items: dict[tuple[str, str], Item] = field(default_factory=dict)
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # each item's, as written
    attribute_sizes: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    # index -> hash value -> (range value, table key) in order; and the item as the index holds
    # it (as of the last change that reached the index: stale while the index lags)
    entries: dict[str, dict[str, SortedList]] = field(default_factory=dict)
    snapshots: dict[str, dict[tuple[str, str], Item]] = field(default_factory=dict)
    # writes not yet in the indexes: (when they reach them, key, the item, each index's change)
    pending: deque[tuple[float, tuple[str, str], Item | None, list[_Change]]] = field(
        default_factory=deque
    )

    def key_of(self, key: Mapping[str, Value]) -> tuple[str, str]:
        hash_value = key[self.hash_key]["S"]
        range_value = key[self.range_key]["S"] if self.range_key else ""
        return hash_value, range_value

    def index_changes(self, before: Item | None, after: Item | None) -> list[_Change]:
        """Each index's entry for the item before and after a write. An index whose key
        attributes the write left alone (the same values) keeps its entry, unread: most writes
        change one index's keys of four, and reading an entry makes a Decimal of its number."""
        changes: list[_Change] = []
        for index in self.indexes.values():
            hash_key, range_key = index.hash_key, index.range_key
            if (
                before is not None
                and after is not None
                and before.get(hash_key) is after.get(hash_key)
                and (range_key is None or before.get(range_key) is after.get(range_key))
            ):
                listed = hash_key in after and (range_key is None or range_key in after)
                changes.append((index, _KEPT if listed else None, _KEPT if listed else None))
            else:
                changes.append(
                    (index, self.index_entry(index, before), self.index_entry(index, after))
                )
        return changes

    def index_entry(self, index: Index, item: Item | None) -> tuple[str, Any] | None:
        if item is None or index.hash_key not in item:
            return None
        if index.range_key is not None and index.range_key not in item:
            return None
        hash_value = str(_scalar(item[index.hash_key]))
        range_value = _scalar(item[index.range_key]) if index.range_key else ""
        return hash_value, range_value


class DynamoModel:
    """The tables, the clock they live on, and what was asked of them."""

    def __init__(self, clock: Callable[[], float], *, index_lag: float = 0.0) -> None:
        self.clock = clock
        self.index_lag = index_lag
        self.tables: dict[str, Table] = {}
        self.calls: Counter[str] = Counter()
        self.units: dict[str, float] = defaultdict(float)  # "read" / "write" capacity units
        self.locks: dict[tuple[str, tuple[str, str]], float] = {}  # item -> locked until
        self.faults: Callable[[str], DynamoError | None] | None = None

    def create(self, table: Table) -> Table:
        table.entries = {name: defaultdict(SortedList) for name in table.indexes}
        table.snapshots = {name: {} for name in table.indexes}
        self.tables[table.name] = table
        return table

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise DynamoError("ResourceNotFoundException", f"Requested resource not found: {name}")
        return self.tables[name]

    def fault(self, operation: str) -> None:
        if self.faults is not None:
            error = self.faults(operation)
            if error is not None:
                raise error

    # --- writes ------------------------------------------------------------------------------

    def _write(
        self,
        table: Table,
        key: tuple[str, str],
        before: Item | None,
        after: Item | None,
        *,
        transactional: bool = False,
    ) -> None:
        old_size = table.sizes.get(key, 0) if before is not None else 0
        if after is None:
            table.items.pop(key, None)
            table.sizes.pop(key, None)
            table.attribute_sizes.pop(key, None)
            new_size = 0
        else:
            table.items[key] = after
            sizes = _measured(before, table.attribute_sizes.get(key), after)
            table.attribute_sizes[key] = sizes
            new_size = table.sizes[key] = sum(sizes.values()) if sizes else 2
        size = max(old_size, new_size)
        self.units["write"] += math.ceil(size / 1024) * (2 if transactional else 1)
        changes = table.index_changes(before, after)
        for index, old, new in changes:
            if old != new:
                self.units["write"] += (
                    1 if index.projection == "KEYS_ONLY" else math.ceil(size / 1024)
                )
        if self.index_lag:
            table.pending.append((self.clock() + self.index_lag, key, after, changes))
        else:
            self._index(table, key, after, changes)

    def _index(
        self, table: Table, key: tuple[str, str], after: Item | None, changes: list[_Change]
    ) -> None:
        for index, old, new in changes:
            if new is not None:
                table.snapshots[index.name][key] = _project(after or {}, table, index)
            elif old is not None:
                table.snapshots[index.name].pop(key, None)
            if old == new:
                continue
            if old is not None:
                table.entries[index.name][old[0]].discard((old[1], key))
            if new is not None:
                table.entries[index.name][new[0]].add((new[1], key))

    def _catch_up(self, table: Table) -> None:
        now = self.clock()
        while table.pending and table.pending[0][0] <= now:
            _, key, after, changes = table.pending.popleft()
            self._index(table, key, after, changes)

    def put(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["PutItem"] += 1
        self.fault("PutItem")
        table = self.table(request["TableName"])
        item = dict(request["Item"])
        key = table.key_of(item)
        current = table.items.get(key)
        self._check(request, current)
        self._write(table, key, current, item)
        return {}

    def get(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["GetItem"] += 1
        self.fault("GetItem")
        table = self.table(request["TableName"])
        key = table.key_of(request["Key"])
        item = table.items.get(key)
        consistent = request.get("ConsistentRead", False)
        self.units["read"] += max(1, math.ceil(table.sizes.get(key, 0) / 4096)) / (
            1 if consistent else 2
        )
        return {} if item is None else {"Item": dict(item)}

    def _check(self, request: Mapping[str, Any], current: Item | None) -> None:
        condition = request.get("ConditionExpression")
        if condition is None:
            return
        context = _Context(
            request.get("ExpressionAttributeNames", {}),
            request.get("ExpressionAttributeValues", {}),
        )
        if not parse_condition(condition)(current or {}, context):
            raise DynamoError("ConditionalCheckFailedException", "The conditional request failed")

    def _updated(
        self, table: Table, request: Mapping[str, Any]
    ) -> tuple[tuple[str, str], Item | None, Item]:
        key = table.key_of(request["Key"])
        current = table.items.get(key)
        self._check(request, current)
        item = dict(current) if current is not None else dict(request["Key"])
        context = _Context(
            request.get("ExpressionAttributeNames", {}),
            request.get("ExpressionAttributeValues", {}),
        )
        parse_update(request["UpdateExpression"])(item, context)
        return key, current, item

    def update(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["UpdateItem"] += 1
        self.fault("UpdateItem")
        table = self.table(request["TableName"])
        key = table.key_of(request["Key"])
        if self.locks.get((table.name, key), -1.0) > self.clock():
            raise DynamoError("TransactionConflictException", "Transaction is ongoing for the item")
        key, current, item = self._updated(table, request)
        self._write(table, key, current, item)
        if request.get("ReturnValues") == "ALL_NEW":
            return {"Attributes": dict(item)}
        return {}

    def lock(self, items: list[Mapping[str, Any]], until: float) -> None:
        """A transaction begins: its items are locked until it ends, or it conflicts now."""
        keys = []
        for entry in items:
            (request,) = entry.values()
            table = self.table(request["TableName"])
            keys.append((table.name, table.key_of(request["Key"])))
        now = self.clock()
        if any(self.locks.get(key, -1.0) > now for key in keys):
            self.calls["TransactionConflict"] += 1
            reasons = [
                {"Code": "TransactionConflict" if self.locks.get(key, -1.0) > now else "None"}
                for key in keys
            ]
            raise DynamoError(
                "TransactionCanceledException",
                "Transaction cancelled, please refer cancellation reasons for specific reasons",
                CancellationReasons=reasons,
            )
        for key in keys:
            self.locks[key] = until

    def transact(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """TransactWriteItems (Update and Put entries): every condition holds, or none applies."""
        self.calls["TransactWriteItems"] += 1
        self.fault("TransactWriteItems")
        planned: list[tuple[Table, tuple[str, str], Item | None, Item]] = []
        reasons: list[dict[str, str]] = []
        for entry in request["TransactItems"]:
            ((kind, inner),) = entry.items()
            if kind not in ("Update", "Put"):
                raise DynamoError("ValidationException", f"{kind} is not modelled")
            table = self.table(inner["TableName"])
            try:
                if kind == "Update":
                    key, current, item = self._updated(table, inner)
                else:
                    item = dict(inner["Item"])
                    key = table.key_of(item)
                    current = table.items.get(key)
                    self._check(inner, current)
            except DynamoError as error:
                if error.code != "ConditionalCheckFailedException":
                    raise
                reasons.append({"Code": "ConditionalCheckFailed", "Message": error.message})
                continue
            reasons.append({"Code": "None"})
            planned.append((table, key, current, item))
        if len(planned) < len(request["TransactItems"]):
            raise DynamoError(
                "TransactionCanceledException",
                "Transaction cancelled, please refer cancellation reasons for specific reasons "
                f"[{', '.join(reason['Code'] for reason in reasons)}]",
                CancellationReasons=reasons,
            )
        for table, key, current, item in planned:
            self._write(table, key, current, item, transactional=True)
        return {}

    # --- reads -------------------------------------------------------------------------------

    def query(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["Query"] += 1
        self.fault("Query")
        table = self.table(request["TableName"])
        self._catch_up(table)
        index_name = request.get("IndexName")
        index = table.indexes[index_name] if index_name else None
        hash_name = index.hash_key if index else table.hash_key
        range_name = (index.range_key if index else table.range_key) or ""
        names = request.get("ExpressionAttributeNames", {})
        values = request.get("ExpressionAttributeValues", {})
        hash_value, bounds = _key_condition(
            request["KeyConditionExpression"], names, values, hash_name, range_name
        )
        forward = request.get("ScanIndexForward", True)
        limit = request.get("Limit")
        start = request.get("ExclusiveStartKey")
        found: list[Item] = []
        size = 0
        for key, item in self._in_order(table, index, hash_value, bounds, forward):
            if start is not None:
                if all(item.get(name) == value for name, value in start.items()):
                    start = None
                continue
            found.append(item)
            size += table.sizes.get(key, 0) if index is None or index.projection == "ALL" else 64
            if limit is not None and len(found) >= limit:
                break
        self.units["read"] += max(1, math.ceil(size / 4096)) / 2
        answer: dict[str, Any] = {"Items": found, "Count": len(found)}
        if limit is not None and len(found) >= limit and found:
            keys = {table.hash_key, *([table.range_key] if table.range_key else [])}
            if index is not None:
                keys |= {index.hash_key, *([index.range_key] if index.range_key else [])}
            answer["LastEvaluatedKey"] = {
                name: found[-1][name] for name in keys if name in found[-1]
            }
        return answer

    def _in_order(
        self,
        table: Table,
        index: Index | None,
        hash_value: str,
        bounds: tuple[Any, Any, bool, bool],
        forward: bool,
    ) -> Iterator[tuple[tuple[str, str], Item]]:
        low, high, low_inclusive, high_inclusive = bounds
        if index is None:
            keys = sorted(
                key
                for key in table.items
                if key[0] == hash_value
                and _within(key[1], low, high, low_inclusive, high_inclusive)
            )
            for key in keys if forward else reversed(keys):
                yield key, table.items[key]
            return
        entries = table.entries[index.name].get(hash_value)
        if not entries:
            return
        chosen = entries.irange(
            None if low is None else (low,),
            None if high is None else (high, ("\uffff", "\uffff")),
            reverse=not forward,
        )
        snapshots = table.snapshots[index.name]
        for range_value, key in chosen:
            if _within(range_value, low, high, low_inclusive, high_inclusive):
                yield key, snapshots[key]

    def batch_get(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["BatchGetItem"] += 1
        self.fault("BatchGetItem")
        responses: dict[str, list[Item]] = {}
        for name, spec in request["RequestItems"].items():
            table = self.table(name)
            keys = [table.key_of(key) for key in spec["Keys"]]
            responses[name] = [dict(table.items[key]) for key in keys if key in table.items]
            self.units["read"] += (
                sum(math.ceil(table.sizes[k] / 4096) for k in keys if k in table.sizes) / 2
            )
        return {"Responses": responses, "UnprocessedKeys": {}}

    def count(self, table: str, index: str, hash_value: str | None = None) -> int:
        """Entries of an index (all shards, or one): for the simulation's own bookkeeping."""
        entries = self.table(table).entries[index]
        if hash_value is not None:
            return len(entries.get(hash_value, ()))
        return sum(len(shard) for shard in entries.values())


def _project(item: Item, table: Table, index: Index | None) -> Item:
    if index is None or index.projection == "ALL":
        return item  # the caller's answer is copied by the client, as over the wire
    keys = {table.hash_key, table.range_key, index.hash_key, index.range_key} - {None}
    return {name: value for name, value in item.items() if name in keys}


def _within(value: Any, low: Any, high: Any, low_inclusive: bool, high_inclusive: bool) -> bool:
    if low is not None and (value < low or (value == low and not low_inclusive)):
        return False
    return high is None or not (value > high or (value == high and not high_inclusive))


_RANGE = re.compile(
    r"\s*(?P<name>\S+)\s*(?:(?P<op><=|>=|=|<|>)\s*(?P<value>:\w+)|BETWEEN\s+(?P<low>:\w+)\s+"
    r"AND\s+(?P<high>:\w+))\s*",
    re.IGNORECASE,
)


def _key_condition(
    text: str,
    names: Mapping[str, str],
    values: Mapping[str, Value],
    hash_name: str,
    range_name: str,
) -> tuple[str, tuple[Any, Any, bool, bool]]:
    """The partition key's value, and the sort key's bounds: (low, high, each inclusive?)."""
    hash_value, operator, operands = _key_parts(
        text, tuple(sorted(names.items())), hash_name, range_name
    )
    partition = str(_scalar(values[hash_value]))
    bounds = [_scalar(values[operand]) for operand in operands]
    if operator is None:
        return partition, (None, None, True, True)
    if operator == "BETWEEN":
        return partition, (bounds[0], bounds[1], True, True)
    (value,) = bounds
    return partition, {
        "=": (value, value, True, True),
        "<": (None, value, True, False),
        "<=": (None, value, True, True),
        ">": (value, None, False, True),
        ">=": (value, None, True, True),
    }[operator]


@functools.lru_cache(maxsize=256)
def _key_parts(
    text: str, names: tuple[tuple[str, str], ...], hash_name: str, range_name: str
) -> tuple[str, str | None, tuple[str, ...]]:
    """A key condition read once: the hash key's placeholder, the range operator and its
    placeholders (None and () for none); queries repeat a handful of conditions."""
    named = dict(names)
    parts = re.split(r"\s+AND\s+", text.strip(), maxsplit=1, flags=re.IGNORECASE)
    match = re.fullmatch(r"\s*(\S+)\s*=\s*(:\w+)\s*", parts[0])
    if match is None or named.get(match[1], match[1]) != hash_name:
        raise DynamoError("ValidationException", f"key condition must name {hash_name}: {text!r}")
    if len(parts) == 1:
        return match[2], None, ()
    condition = _RANGE.fullmatch(parts[1])
    if condition is None or named.get(condition["name"], condition["name"]) != range_name:
        raise DynamoError("ValidationException", f"the model does not understand {parts[1]!r}")
    if condition["low"]:
        return match[2], "BETWEEN", (condition["low"], condition["high"])
    return match[2], condition["op"], (condition["value"],)


__all__ = ["DynamoError", "DynamoModel", "Index", "Table", "parse_condition", "parse_update"]
