"""Reading old event shapes: small functions that lift a raw record one version.

An upcaster takes the raw JSON dict of `(event_type, version)` and returns the
dict of `version + 1`. `upcast` applies them until the current version, so a
v1 record written years ago still reads as today's model. History itself is
never rewritten: upcasting happens on read.

The input policy (issue 14: NFC text without control characters, DNS-1123 names,
bounded lists) tightened the models without a version bump. Deliberately, no upcaster
loosens or repairs an old record that breaks it: such a record is exactly what the
policy refuses (a '..' region, an escape sequence in a title), so it is dead-lettered
on read like a new one. Every name the demo, the simulator, the runbooks and the tests
use already satisfies the policy, so no history Conn wrote itself becomes unreadable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Raw = dict[str, Any]
Upcaster = Callable[[Raw], Raw]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


class UpcastError(ValueError):
    pass


def upcast(raw: Raw, current_versions: dict[str, int]) -> Raw:
    """Lift `raw` to the current version of its type (unchanged if current)."""
    event_type = raw.get("event_type")
    version = raw.get("schema_version")
    if not isinstance(event_type, str) or event_type not in current_versions:
        raise UpcastError(f"unknown event_type {event_type!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UpcastError(f"invalid schema_version {version!r} for {event_type}")
    target = current_versions[event_type]
    if version > target:
        raise UpcastError(f"{event_type} v{version} is newer than this reader (v{target})")
    while version < target:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise UpcastError(f"no upcaster for {event_type} v{version}")
        raw = step(raw)
        version += 1
        raw["schema_version"] = version
    return raw


@upcaster("IncidentOpened", 1)
def incident_opened_v1_to_v2(raw: Raw) -> Raw:
    """v1 carried `sev` as an integer 1..5; v2 carries `severity` as 'sev1'..'sev5'."""
    payload = dict(raw.get("payload") or {})
    sev = payload.pop("sev", 2)
    if not isinstance(sev, int) or not 1 <= sev <= 5:
        raise UpcastError(f"IncidentOpened v1: sev must be 1..5, got {sev!r}")
    payload["severity"] = f"sev{sev}"
    return {**raw, "payload": payload}
