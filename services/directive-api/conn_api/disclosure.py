"""Who sees what (invariant 10, minimal disclosure) on the API's reads.

Raw tool output (`result.output` of a step) and unscrubbed errors (step errors,
unknown-outcome reasons, failed reads, verification details, refusal details) are
readable only by the roles that act on them: commander, specialist, admin.
Everyone else (observers, integration tokens) gets the same documents with the raw
output replaced by a marker and every such text scrubbed (the shared detector in
`conn_core.redaction`, as the executor's summaries: URLs, credentials, hosts, addresses,
tokens). Pure functions.
"""

from __future__ import annotations

from typing import Any

from conn_api.auth import Identity
from conn_core.redaction import scrub
from conn_schemas.values import Role

PRIVILEGED = (Role.COMMANDER, Role.SPECIALIST, Role.ADMIN)
WITHHELD = "[withheld: raw tool output is readable by the commander, specialist and admin roles]"

_TEXT_KEYS = frozenset({"error", "reason", "detail", "refusal_detail", "observed", "message"})
"""Free text that may carry what a tool or a dependency said (hosts, credentials...)."""
_TEXT_LIST_KEYS = frozenset({"errors", "conflicts"})
_MAX_TEXT = 2000


def privileged(identity: Identity) -> bool:
    return identity.has(*PRIVILEGED)


def redacted(doc: Any, *, _key: str | None = None, _parent: str | None = None) -> Any:
    """A copy of a JSON document with raw tool output withheld and error texts scrubbed."""
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key == "output" and _key == "result":
                out[key] = {"withheld": WITHHELD} if value else value
            elif key in _TEXT_KEYS and isinstance(value, str):
                out[key] = scrub(value, limit=_MAX_TEXT)
            elif key in _TEXT_LIST_KEYS and isinstance(value, list | tuple):
                out[key] = [
                    scrub(v, limit=_MAX_TEXT) if isinstance(v, str) else redacted(v, _key=key)
                    for v in value
                ]
            else:
                out[key] = redacted(value, _key=key, _parent=_key)
        return out
    if isinstance(doc, list | tuple):
        return [redacted(v, _key=_key, _parent=_parent) for v in doc]
    return doc


def for_reader(identity: Identity, doc: Any) -> Any:
    """`doc` as `identity` may read it."""
    return doc if privileged(identity) else redacted(doc)


def ledger_items(identity: Identity, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ledger entries as `identity` may read them; a redacted entry says so (its event
    no longer hashes to the entry's `hash`)."""
    if privileged(identity):
        return items
    return [{**redacted(item), "redacted": True} for item in items]
