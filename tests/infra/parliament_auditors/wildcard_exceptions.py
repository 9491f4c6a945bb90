"""A parliament auditor for what its database cannot know: actions AWS authorises only on "*".

Parliament checks resources against the Service Authorization Reference, which lists ListTasks
under container-instance; a grant scoped that way passes parliament and is denied by AWS.
`infra.policies.WILDCARD_RESOURCE_EXCEPTIONS` names these actions and why; this auditor reports
any of them granted on something narrower than "*" (the call would be denied) or without the
condition that alone keeps it to this stack (`WILDCARD_RESOURCE_CONDITIONS`).
"""

from __future__ import annotations

from typing import Any

from infra.policies import WILDCARD_RESOURCE_CONDITIONS, WILDCARD_RESOURCE_EXCEPTIONS

NARROWER_THAN_AWS_AUTHORISES = "WILDCARD_EXCEPTION_NOT_ON_STAR"
UNCONDITIONED = "WILDCARD_EXCEPTION_WITHOUT_ITS_CONDITION"


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def audit(policy: Any) -> None:
    """Parliament's private-auditor entry point: add a finding per misgranted exception."""
    document = policy.policy_json()  # jsoncfg nodes are called for their plain value
    for statement in _listed(document.get("Statement", [])):
        if statement.get("Effect") != "Allow":
            continue
        granted = set(_listed(statement.get("Action", []))) & set(WILDCARD_RESOURCE_EXCEPTIONS)
        for action in sorted(granted):
            where = {"sid": statement.get("Sid", ""), "action": action}
            if _listed(statement.get("Resource", [])) != ["*"]:
                policy.add_finding(
                    NARROWER_THAN_AWS_AUTHORISES, detail=statement["Resource"], location=where
                )
            key = WILDCARD_RESOURCE_CONDITIONS.get(action)
            conditions = statement.get("Condition", {}).values()
            if key is not None and not any(key in keys for keys in conditions):
                policy.add_finding(UNCONDITIONED, detail=key, location=where)
