"""Redacted summaries for the incident record (invariant 10, minimal disclosure).

The full `ActionResult` (raw tool output) goes into the StepSucceeded payload,
which is the audit store. What reaches the incident record is a one-line
summary built from a whitelist of state fields, with secrets, URLs, hostnames
and IP addresses scrubbed from any free text (errors, notes) by the shared
detector in `conn_core.redaction`. Pure functions.
"""

from __future__ import annotations

from typing import Any

from conn_core.redaction import MAX_SUMMARY, REDACTED, redact, scrub
from conn_schemas.observations import ActionResult
from conn_schemas.values import Action, describe_action

# State fields safe to show (from FlagRuleState / WorkerPoolState / TierState dumps).
_SAFE_FIELDS = ("enabled", "desired_replicas", "ready_replicas", "healthy", "restarting")


def _state_line(state: dict[str, Any]) -> str:
    parts = []
    for key in _SAFE_FIELDS:
        if key in state and isinstance(state[key], bool | int) and not isinstance(state[key], str):
            parts.append(f"{key}={str(state[key]).lower()}")
    return ", ".join(parts)


def step_summary(action: Action, result: ActionResult) -> str:
    """'drain_worker_pool cache-invalidation in us-east: done (desired_replicas=6 -> 0 ...)'."""
    verb = "done" if result.changed else "no change needed (already applied under this key)"
    before, after = _state_line(result.before), _state_line(result.after)
    detail = f" ({before} -> {after})" if before or after else ""
    return scrub(f"{describe_action(action)}: {verb}{detail}")


def failure_summary(action: Action, error: str, *, timed_out: bool = False) -> str:
    what = "timed out" if timed_out else "failed"
    return scrub(f"{describe_action(action)}: {what}: {error}")


def unknown_summary(action: Action, reason: str) -> str:
    return scrub(f"{describe_action(action)}: outcome unknown: {reason}")


__all__ = [
    "MAX_SUMMARY",
    "REDACTED",
    "failure_summary",
    "redact",
    "scrub",
    "step_summary",
    "unknown_summary",
]
