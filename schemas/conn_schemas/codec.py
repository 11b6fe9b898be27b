"""Encoding events for Kafka and decoding them back, with upcasting.

`decode` is the only way a consumer turns bytes into an event. Anything it
cannot read raises `UnreadableRecord` with a precise reason, which the
consumer loop sends to `conn.deadletter`.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from conn_schemas.events import CURRENT_VERSIONS, Envelope, Event
from conn_schemas.upcasting import UpcastError, upcast

MAX_RECORD_BYTES = 1_000_000

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class UnreadableRecord(ValueError):
    """A record that is not a readable Conn event. `reason` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(event: Envelope) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


def to_raw(event: Envelope) -> dict[str, Any]:
    """The JSON-compatible dict of an event (what is on the wire)."""
    raw: dict[str, Any] = event.model_dump(mode="json")
    return raw


def decode(value: bytes | None) -> Event:
    if value is None:
        raise UnreadableRecord("empty", "record has no value")
    if len(value) > MAX_RECORD_BYTES:
        raise UnreadableRecord("too_large", f"{len(value)} bytes > {MAX_RECORD_BYTES}")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise UnreadableRecord("not_json", str(exc)) from exc
    return decode_raw(raw)


def decode_raw(raw: object) -> Event:
    if not isinstance(raw, dict):
        raise UnreadableRecord("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    event_type = raw.get("event_type")
    if not isinstance(event_type, str) or event_type not in CURRENT_VERSIONS:
        raise UnreadableRecord("unknown_event_type", f"event_type {event_type!r} is not known")
    try:
        raw = upcast(dict(raw), CURRENT_VERSIONS)
    except UpcastError as exc:
        raise UnreadableRecord("unsupported_version", str(exc)) from exc
    try:
        return _EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UnreadableRecord(
            "invalid", f"{event_type}: {where}: {first['msg']} ({exc.error_count()} errors)"
        ) from exc
