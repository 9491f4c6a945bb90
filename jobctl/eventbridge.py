"""EventBridge's part in the demo: which of the program's rules deliver an event to the runner.

The demo hands the runner a task's stop only if a rule the program declares for the runner
matches it, so a pattern that would miss the job's stops (a wrong cluster ARN, a family prefix
that does not fit) fails the demo instead of a deployment. Matching follows EventBridge's
content filtering for what patterns use: listed values, `prefix`, `anything-but`, `exists`,
nested objects, `$or`; a list in the event matches if any of its items does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobctl.evaluate import Evaluation

RULE_TYPE = "aws:cloudwatch/eventRule:EventRule"
TARGET_TYPE = "aws:cloudwatch/eventTarget:EventTarget"
FUNCTION_TYPE = "aws:lambda/function:Function"


@dataclass(frozen=True)
class Rules:
    """The rules that invoke the runner: their event patterns, and the schedule's rule ARN."""

    patterns: tuple[Mapping[str, Any], ...] = ()
    schedule_arn: str | None = None
    schedule: str | None = None  # its expression, e.g. rate(1 minute)

    def deliver(self, event: Mapping[str, Any]) -> bool:
        """Whether a rule delivers the event; every event when the program declares none (a
        program from before the runner was driven by events)."""
        if not self.patterns:
            return True
        return any(matches(pattern, event) for pattern in self.patterns)


def runner_rules(evaluation: Evaluation) -> Rules:
    """The rules whose target is the runner function, as the program declares them."""
    function_arn = evaluation.one(FUNCTION_TYPE).outputs.get("arn")
    targeted = {
        str(target.inputs.get("rule"))
        for target in evaluation.of_type(TARGET_TYPE)
        if target.inputs.get("arn") == function_arn
    }
    patterns: list[Mapping[str, Any]] = []
    schedule_arn = schedule = None
    for rule in evaluation.of_type(RULE_TYPE):
        if rule.outputs.get("name") not in targeted:
            continue
        if rule.inputs.get("eventPattern"):
            patterns.append(json.loads(rule.inputs["eventPattern"]))
        if rule.inputs.get("scheduleExpression"):
            schedule_arn = str(rule.outputs.get("arn"))
            schedule = str(rule.inputs["scheduleExpression"])
    return Rules(tuple(patterns), schedule_arn, schedule)


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether the event matches the pattern (every field of the pattern)."""
    for name, wanted in pattern.items():
        if name == "$or":
            if not any(matches(branch, event) for branch in wanted):
                return False
            continue
        value = event.get(name, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(wanted, Mapping):
            if value is _MISSING:
                return False
            items = value if isinstance(value, list) else [value]
            if not any(isinstance(item, Mapping) and matches(wanted, item) for item in items):
                return False
        elif not _field_matches(wanted, value):
            return False
    return True


_MISSING = object()


def _field_matches(rules: list[Any], value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(_one(rule, item) for rule in rules for item in values)


def _one(rule: Any, value: Any) -> bool:
    if not isinstance(rule, Mapping):
        return value is not _MISSING and rule == value
    if "exists" in rule:
        return (value is not _MISSING) == bool(rule["exists"])
    if value is _MISSING:
        return False
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(str(rule["prefix"]))
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        if isinstance(excluded, Mapping) and "prefix" in excluded:
            return not (isinstance(value, str) and value.startswith(str(excluded["prefix"])))
        listed = excluded if isinstance(excluded, list) else [excluded]
        return value not in listed
    raise ValueError(f"the demo cannot match the pattern rule {rule!r}")
