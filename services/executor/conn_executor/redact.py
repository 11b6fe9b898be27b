"""Redacted summaries for the incident record (invariant 10, minimal disclosure).

The full `ActionResult` (raw tool output) goes into the StepSucceeded payload,
which is the audit store. What reaches the incident record is a one-line
summary built from a whitelist of state fields, with tokens, URLs, hostnames
and IP addresses scrubbed from any free text (errors, notes). Pure functions.
"""

from __future__ import annotations

import re
from typing import Any

from conn_schemas.observations import ActionResult
from conn_schemas.values import Action, describe_action

REDACTED = "[redacted]"

# Order matters: whole URLs first, then credentials, then bare hosts/addresses.
_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE),  # URLs
    re.compile(r"\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE),  # auth headers
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(
        r"\b(?:token|api[_-]?key|apikey|secret|password|passwd|pwd|authorization|auth)"
        r"\s*[=:]\s*[^\s,;'\"]+",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"),  # IPv4 (with port)
    re.compile(r"\b(?:[0-9a-f]{1,4}:){3,7}[0-9a-f]{1,4}\b", re.IGNORECASE),  # IPv6
    re.compile(
        r"\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
        r"(?:local|internal|lan|corp|com|net|org|io|cloud|svc|cluster|dev|prod)\b(?::\d+)?",
        re.IGNORECASE,
    ),  # hostnames
    re.compile(r"\blocalhost(?::\d+)?\b", re.IGNORECASE),
    re.compile(r"\b[A-Fa-f0-9]{32,}\b"),  # long hex secrets
    re.compile(r"\b[A-Za-z0-9+/_-]{40,}={0,2}"),  # long opaque tokens
)

MAX_SUMMARY = 500

# State fields safe to show (from FlagRuleState / WorkerPoolState / TierState dumps).
_SAFE_FIELDS = ("enabled", "desired_replicas", "ready_replicas", "healthy", "restarting")


def scrub(text: str, *, limit: int = MAX_SUMMARY) -> str:
    """Remove URLs, credentials, hostnames and IP addresses from free text."""
    out = text
    for pattern in _PATTERNS:
        out = pattern.sub(REDACTED, out)
    out = " ".join(out.split())
    if len(out) > limit:
        out = out[: limit - 1] + "…"
    return out


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
