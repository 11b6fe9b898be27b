"""Dead-letter reasons carry a reason a human can act on (found by mutation testing).

DESIGN.md: "Unknown or malformed records go to `conn.deadletter` with the reason;
consumers keep going." The reason code says what kind of problem it is; the detail
must say which one (the offending size, type, version or field), or an operator
reading the dead-letter topic cannot find the producer's bug. Each test below was
written against a mutant of `conn_schemas/codec.py` that survived the unit tier
(see docs/mutation.md).
"""

from __future__ import annotations

import orjson
import pytest
from builders import History

from conn_schemas import codec


def _unreadable(value: bytes | None) -> codec.UnreadableRecord:
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode(value)
    return info.value


def _padded_to(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    raw = codec.to_raw(History().open().events[0])
    raw["padding"] = ""
    base = len(orjson.dumps(raw))
    raw["padding"] = "x" * (size - base)
    value = orjson.dumps(raw)
    assert len(value) == size
    return value


def test_a_record_of_exactly_the_limit_is_not_too_large() -> None:
    # The limit is the largest record accepted, not the smallest refused.
    value = _padded_to(codec.MAX_RECORD_BYTES)
    try:
        codec.decode(value)
    except codec.UnreadableRecord as exc:  # the padding field may be refused: not the size
        assert exc.reason != "too_large"


def test_one_byte_over_the_limit_is_too_large_and_says_how_large() -> None:
    error = _unreadable(_padded_to(codec.MAX_RECORD_BYTES + 1))
    assert error.reason == "too_large"
    assert str(codec.MAX_RECORD_BYTES + 1) in error.detail
    assert str(codec.MAX_RECORD_BYTES) in error.detail


@pytest.mark.parametrize(
    ("value", "reason", "names"),
    [
        (None, "empty", "no value"),
        (b"{not json", "not_json", "line 1"),
        (b"[1, 2]", "not_an_object", "list"),
        (b'"a string"', "not_an_object", "str"),
        (b'{"event_type": "Nope", "schema_version": 1}', "unknown_event_type", "'Nope'"),
        (b'{"event_type": "IncidentOpened", "schema_version": 9}', "unsupported_version", "9"),
    ],
)
def test_every_dead_letter_reason_names_what_is_wrong(
    value: bytes | None, reason: str, names: str
) -> None:
    error = _unreadable(value)
    assert error.reason == reason
    assert isinstance(error.detail, str)
    assert names in error.detail
    assert error.detail in str(error)
    assert str(error).startswith(f"{reason}: ")


def test_an_invalid_record_names_the_dotted_path_of_the_bad_field() -> None:
    raw = codec.to_raw(History().open().events[0])
    raw["payload"]["title"] = 42
    error = _unreadable(orjson.dumps(raw))
    assert error.reason == "invalid"
    assert error.detail.startswith("IncidentOpened: ")
    assert ".payload.title: " in error.detail
    assert error.detail.endswith("(1 errors)")
