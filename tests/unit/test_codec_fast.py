"""The cheaper decode refuses exactly what the old one refused (issue 17, Build 3).

`codec.decode` used to parse every record twice: orjson, then `json.loads` with a
Python hook per object to refuse a key that appears twice. It now skips the second
parse when the record is byte for byte orjson's own encoding of what it parsed
(`codec.is_own_encoding`), which no document with a duplicate key can be. The old
implementation is kept here, verbatim, as the oracle: for adversarial JSON (keys
repeated at any depth, the same key written raw and escaped, unicode, whitespace),
for real events and for real events with a key repeated, the new `decode` gives the
same event or the same refusal (reason and detail) as the old one.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from builders import one_of_each
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from conn_schemas import codec
from conn_schemas.events import CURRENT_VERSIONS, Event
from conn_schemas.upcasting import UpcastError, upcast

# --- the oracle: codec.decode as it was before the fast path -------------------------

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


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


def old_duplicate_key(value: bytes) -> str | None:
    if not value:
        return None
    try:
        json.loads(value, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        return dup.key
    except (ValueError, RecursionError):
        return None
    return None


def old_decode_raw(raw: object) -> Event:
    if not isinstance(raw, dict):
        raise codec.UnreadableRecord(
            "not_an_object", f"expected a JSON object, got {type(raw).__name__}"
        )
    event_type = raw.get("event_type")
    if not isinstance(event_type, str) or event_type not in CURRENT_VERSIONS:
        raise codec.UnreadableRecord(
            "unknown_event_type", f"event_type {event_type!r} is not known"
        )
    try:
        raw = upcast(dict(raw), CURRENT_VERSIONS)
    except UpcastError as exc:
        raise codec.UnreadableRecord("unsupported_version", str(exc)) from exc
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise codec.UnreadableRecord(
            "invalid", f"{event_type}: {where}: {first['msg']} ({exc.error_count()} errors)"
        ) from exc


def old_decode(value: bytes | None) -> Event:
    if value is None:
        raise codec.UnreadableRecord("empty", "record has no value")
    if len(value) > codec.MAX_RECORD_BYTES:
        raise codec.UnreadableRecord("too_large", f"{len(value)} bytes > {codec.MAX_RECORD_BYTES}")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise codec.UnreadableRecord("not_json", str(exc)) from exc
    duplicate = old_duplicate_key(value)
    if duplicate is not None:
        raise codec.UnreadableRecord(
            "duplicate_key", f"the key {duplicate[:100]!r} appears twice in one object"
        )
    return old_decode_raw(raw)


def outcome(decode: Any, value: bytes | None) -> tuple[Any, ...]:
    try:
        return ("event", decode(value))
    except codec.UnreadableRecord as exc:
        return ("refused", exc.reason, exc.detail)


def assert_same(value: bytes) -> None:
    assert outcome(codec.decode, value) == outcome(old_decode, value)
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if codec.is_own_encoding(value, raw):
        assert old_duplicate_key(value) is None


# --- adversarial JSON text --------------------------------------------------------------

KEYS = ["a", "b", "event_type", "payload", "é", "e\u0301", "\u2028", '"', "\\", "\x00", "😀"]
"""Few keys, so objects repeat them; some with look-alikes (NFC vs NFD, escapes)."""


def _escaped(text: str, draw: Any) -> str:
    """A JSON string literal for `text`, each character written raw or \\u-escaped
    (surrogate pairs for astral characters): the same key, spelt differently."""
    out = []
    for ch in text:
        code = ord(ch)
        must = ch in '"\\' or code < 0x20
        if must or draw(st.booleans()):
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
            else:
                out.append(f"\\u{code:04x}" if draw(st.booleans()) else f"\\u{code:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@st.composite
def json_text(draw: Any, depth: int = 0) -> str:
    space = draw(st.sampled_from(["", " ", "\n", "\t "]))
    kind = draw(
        st.sampled_from(
            ["obj", "obj", "arr", "str", "num", "lit"] if depth < 4 else ["str", "num", "lit"]
        )
    )
    if kind == "obj":
        n = draw(st.integers(0, 4))
        members = []
        for _ in range(n):
            key = draw(st.sampled_from(KEYS) | st.text(max_size=3))
            members.append(f"{space}{_escaped(key, draw)}{space}:{draw(json_text(depth + 1))}")
        return "{" + ",".join(members) + space + "}"
    if kind == "arr":
        items = [draw(json_text(depth + 1)) for _ in range(draw(st.integers(0, 3)))]
        return "[" + ",".join(items) + "]"
    if kind == "str":
        return _escaped(draw(st.text(max_size=5)), draw)
    if kind == "num":
        return draw(
            st.sampled_from(["0", "-1", "1.0", "1e2", "1E+2", "0.1", "18446744073709551616", "-0"])
            | st.integers(-(2**70), 2**70).map(str)
            | st.floats(allow_nan=False, allow_infinity=False).map(repr)
        )
    return draw(st.sampled_from(["true", "false", "null"]))


@st.composite
def canonical_with_duplicates(draw: Any) -> bytes:
    """orjson's own encoding of a dict tree, then (usually) one key of one object at any
    depth written twice, raw or escaped: one byte away from the fast path."""
    values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=4),
        lambda inner: (
            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4) | st.lists(inner, max_size=3)
        ),
        max_leaves=12,
    )
    tree = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=4))
    text = orjson.dumps(tree).decode()
    opens = [i for i, ch in enumerate(text) if ch == "{"]
    if not opens or draw(st.integers(0, 3)) == 0:
        return text.encode()
    at = draw(st.sampled_from(opens))
    key = draw(st.sampled_from(KEYS))
    member = f"{_escaped(key, draw)}:{draw(json_text(2))}"
    rest = text[at + 1 :]
    closing = rest.startswith("}")
    injected = text[: at + 1] + member + ("" if closing else ",") + rest
    if not closing and draw(st.booleans()):  # the same key twice, for sure
        injected = text[: at + 1] + member + "," + member + ("" if closing else ",") + rest
    return injected.encode()


def test_every_conn_event_takes_the_fast_path() -> None:
    """What Conn writes never pays for the second parse (the point of the change)."""
    for event in one_of_each():
        value = codec.encode(event)
        assert codec.is_own_encoding(value, orjson.loads(value)), event.event_type


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_text())
@example('{"a":1,"\\u0061":2}')
@example('{"a":{"b":1,"b":2}}')
@example('{"e\\u0301":1,"\u00e9":2}')
@example('{"\\ud83d\\ude00":1,"😀":2}')
@example('[{"a":1,"a":1}]')
@example('{"\\ud800":1,"\\ud800":2}')
@example('{"a":1,"a":1}')
def test_adversarial_json_is_refused_exactly_as_before(text: str) -> None:
    assert_same(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(canonical_with_duplicates())
def test_own_encodings_with_a_key_repeated_are_refused_exactly_as_before(value: bytes) -> None:
    assert_same(value)


def _events() -> list[tuple[str, dict[str, Any]]]:
    return [(e.event_type, codec.to_raw(e)) for e in one_of_each()]


def _objects(raw: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    if isinstance(raw, dict):
        found.append(path)
        for k, v in raw.items():
            found += _objects(v, (*path, k))
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            found += _objects(v, (*path, i))
    return found


@pytest.mark.parametrize(
    ("event_type", "raw"), _events(), ids=lambda v: v if isinstance(v, str) else ""
)
@given(data=st.data())
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
def test_real_events_with_a_key_repeated_at_any_depth_are_refused(
    event_type: str, raw: dict[str, Any], data: st.DataObject
) -> None:
    """Every object of every event type, one of its keys written again (raw or escaped,
    same or other value, in any formatting): refused as duplicate_key, as before."""
    del event_type
    path = data.draw(st.sampled_from(_objects(raw)))
    target: Any = raw
    for step in path:
        target = target[step]
    if not target:
        return
    key = data.draw(st.sampled_from(sorted(target)))
    text = orjson.dumps(raw).decode()
    inner = orjson.dumps(target).decode()
    assert inner in text
    again = f"{_escaped(key, data.draw)}:{orjson.dumps(target[key]).decode()}"
    changed = inner[:-1] + "," + again + "}"
    value = text.replace(inner, changed, 1).encode()
    assert_same(value)
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode(value)
    assert info.value.reason == "duplicate_key"


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.event_type)
def test_real_events_in_other_spellings_decode_as_before(event: Any) -> None:
    """A foreign producer's formatting (spaces, \\u escapes) misses the fast path and
    is checked the old way: same event."""
    raw = codec.to_raw(event)
    for value in (
        json.dumps(raw).encode(),
        json.dumps(raw, ensure_ascii=True, indent=1).encode(),
        orjson.dumps(raw, option=orjson.OPT_SORT_KEYS),
    ):
        assert_same(value)
        assert codec.decode(value) == event
