"""Encoding events for Kafka and decoding them back, with upcasting.

`decode` is the only way a consumer turns bytes into an event. Anything it
cannot read raises `UnreadableRecord` with a precise reason, which the
consumer loop sends to `conn.deadletter`.
"""

from __future__ import annotations

import json
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


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def duplicate_key(value: bytes) -> str | None:
    """The first key that appears twice in one object of a JSON document, if any (None
    too for bytes that are not JSON). Parsers disagree about which of the two counts
    (the last here, the first in many others), so such a document means different
    things to different readers: refused wherever Conn reads JSON from outside."""
    if not value:
        return None
    try:
        json.loads(value, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        return dup.key
    except (ValueError, RecursionError):
        return None
    return None


def decode(value: bytes | None) -> Event:
    if value is None:
        raise UnreadableRecord("empty", "record has no value")
    if len(value) > MAX_RECORD_BYTES:
        raise UnreadableRecord("too_large", f"{len(value)} bytes > {MAX_RECORD_BYTES}")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise UnreadableRecord("not_json", str(exc)) from exc
    duplicate = None if is_own_encoding(value, raw) else duplicate_key(value)
    if duplicate is not None:
        raise UnreadableRecord(
            "duplicate_key", f"the key {duplicate[:100]!r} appears twice in one object"
        )
    return decode_raw(raw)


def is_own_encoding(value: bytes, raw: object) -> bool:
    """True only when `value` is, byte for byte, orjson's encoding of `raw` (what
    `encode` writes, so every record Conn produced itself): such a document cannot have
    a key twice in one object (it is the encoding of Python dicts, whose keys are
    unique, and orjson encodes distinct strings distinctly), so the slow exact check
    (`duplicate_key`, a second parse with a Python hook per object) can be skipped.
    False says nothing (other whitespace, escapes, number forms, or a duplicate): the
    caller then runs the exact check. It decides no outcome by itself, so `decode`
    refuses exactly the documents it refused before (tests/unit/test_codec_fast.py
    proves it against the old implementation)."""
    try:
        return orjson.dumps(raw) == value
    except orjson.JSONEncodeError:  # e.g. nested deeper than orjson writes
        return False


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
