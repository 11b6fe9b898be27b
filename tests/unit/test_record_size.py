"""No event the services can build exceeds what the consumers accept (issue 14).

The bound is computed from the generated JSON Schema of each event type: every string
has a maxLength (at most 4 bytes a character in UTF-8 JSON, since control characters
other than "\\n" are refused), every list maxItems, every map maxProperties, and free
JSON objects (tool output) an explicit byte bound. The worst case must fit in the
consumers' MAX_RECORD_BYTES (the producer's max_request_size is larger), or a record
the contract accepts could be refused by the broker or dead-lettered as too large.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest

from conn_schemas import codec
from conn_schemas.events import EVENT_TYPES
from conn_schemas.packet import TakeoverPacket

NUMBER = 32  # the longest JSON rendering of a float or a 64-bit integer, generously
BYTES_PER_CHAR = 4  # UTF-8; '"', '\\' and '\n' escape to 2 bytes, the rest is refused


class Unbounded(AssertionError):
    pass


def ascii_only(pattern: str | None) -> bool:
    """A pattern built only of positive ASCII classes and escaped literals (no '[^',
    no bare '.') matches ASCII strings only: one byte a character."""
    if not pattern or not pattern.isascii() or "[^" in pattern or "\\u" in pattern:
        return False
    return re.search(r"(?<!\\)\.", pattern) is None


def max_bytes(node: dict[str, Any], defs: dict[str, Any], where: str = "$") -> int:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return max_bytes(defs[name], defs, f"{where}->{name}")
    if "x-conn-max-bytes" in node:
        return int(node["x-conn-max-bytes"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return max(max_bytes(n, defs, f"{where}|{i}") for i, n in enumerate(node[key]))
    if "const" in node:
        return len(json.dumps(node["const"]).encode())
    if "enum" in node:
        return max(len(json.dumps(v).encode()) for v in node["enum"])
    kind = node.get("type")
    if kind == "string":
        if node.get("format") == "date-time":
            return 40
        if node.get("format") == "uuid":
            return 38
        if "maxLength" not in node:
            raise Unbounded(f"{where}: string without maxLength")
        per_char = 1 if ascii_only(node.get("pattern")) else BYTES_PER_CHAR
        return 2 + per_char * int(node["maxLength"])
    if kind in ("integer", "number"):
        return NUMBER
    if kind == "boolean":
        return 5
    if kind == "null":
        return 4
    if kind == "array":
        if "maxItems" not in node:
            raise Unbounded(f"{where}: array without maxItems")
        item = max_bytes(node.get("items", {}), defs, f"{where}[]")
        return 2 + int(node["maxItems"]) * (item + 1)
    if kind == "object":
        total = 2
        for key, sub in node.get("properties", {}).items():
            total += len(json.dumps(key)) + 2 + max_bytes(sub, defs, f"{where}.{key}")
        extra = node.get("additionalProperties")
        if extra not in (None, False):
            if "maxProperties" not in node:
                raise Unbounded(f"{where}: map without maxProperties")
            names = node.get("propertyNames", {"type": "string"})
            key_bound = max_bytes({"type": "string", **names}, defs, f"{where}{{key}}")
            value = max_bytes(extra if isinstance(extra, dict) else {}, defs, f"{where}{{}}")
            total += int(node["maxProperties"]) * (key_bound + 2 + value)
        return total
    raise Unbounded(f"{where}: cannot bound {node}")


def bound_of(model: Any) -> int:
    schema = model.model_json_schema()
    return max_bytes(schema, schema.get("$defs", {}))


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_the_largest_event_the_contract_accepts_fits_a_record(name: str) -> None:
    assert bound_of(EVENT_TYPES[name]) <= codec.MAX_RECORD_BYTES


def test_the_largest_takeover_packet_fits_a_record() -> None:
    assert bound_of(TakeoverPacket) <= codec.MAX_RECORD_BYTES


def test_the_bound_is_a_real_bound() -> None:
    """The oracle itself can fail: an unbounded string is reported, not guessed."""
    with pytest.raises(Unbounded):
        max_bytes({"type": "string"}, {})
    with pytest.raises(Unbounded):
        max_bytes({"type": "array", "items": {"type": "integer"}}, {})
    assert ascii_only(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
    assert not ascii_only(r"^[^\u0000-\u001f]*$")
    assert not ascii_only(r"^a.b$")


def test_a_packet_after_many_refused_directives_still_builds_and_lists_the_latest() -> None:
    """A hostile or busy commander cannot grow a packet past a record: each section
    lists the most recent MAX_PACKET_DIRECTIVES directives (the API lists them all)."""
    from builders import History

    from conn_core.fold import fold
    from conn_readmodel.packet import build_packet
    from conn_schemas.packet import MAX_PACKET_DIRECTIVES
    from conn_schemas.values import RefusalReason, UpdateIncidentRecord

    h = History("inc-many").open().declare()
    cids = []
    for i in range(3 * MAX_PACKET_DIRECTIVES):
        action = UpdateIncidentRecord(note=f"note {i} " + "\u00e9" * 3900)
        cid = h.direct(action)
        h.refuse(cid, action, RefusalReason.ON_HOLD, detail="x" * 3000)
        cids.append(cid)
    state = fold(h.events, "inc-many")
    packet = build_packet(
        state, head_hash="h", trigger="hold", to_team=None, generated_at=h.events[-1].occurred_at
    )
    assert [d.correlation_id for d in packet.blocked_directives] == cids[-MAX_PACKET_DIRECTIVES:]
    assert len(orjson.dumps(packet.model_dump(mode="json"))) <= codec.MAX_RECORD_BYTES
