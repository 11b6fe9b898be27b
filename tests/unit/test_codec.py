"""The contract: encoding, decoding, dead-letter reasons, upcasting, JSON Schema drift."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from builders import ALICE, History, one_of_each
from hypothesis import given
from hypothesis import strategies as st

from conn_schemas import codec, generate
from conn_schemas import events as ev


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.event_type)
def test_every_event_type_round_trips(event: ev.Envelope) -> None:
    assert codec.decode(codec.encode(event)) == event


def test_events_are_frozen() -> None:
    event = History().open().events[0]
    with pytest.raises(Exception, match="frozen"):
        event.incident_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"event_type": "Nope", "schema_version": 1}', "unknown_event_type"),
        (b'{"event_type": "IncidentOpened", "schema_version": 9}', "unsupported_version"),
        (b'{"event_type": "IncidentOpened", "schema_version": 2, "payload": {}}', "invalid"),
        (b"x" * (codec.MAX_RECORD_BYTES + 1), "too_large"),
        (b'{"event_type": "Nope", "event_type": "IncidentOpened"}', "duplicate_key"),
        (b'{"event_type": "IncidentOpened", "payload": {"a": 1, "a": 2}}', "duplicate_key"),
    ],
)
def test_unreadable_records_have_a_precise_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode(value)
    assert info.value.reason == reason


def test_free_text_targets_are_rejected() -> None:
    raw = codec.to_raw(History().open().events[0])
    raw["event_type"] = "DirectiveIssued"
    raw["schema_version"] = 1
    raw["payload"] = {
        "action": {"action": "drain_worker_pool", "pool": "all pools please", "region": "us-east"},
        "based_on_sequence": 1,
    }
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode_raw(raw)
    assert info.value.reason == "invalid"
    assert "pool" in info.value.detail


def test_v1_incident_opened_reads_as_v2() -> None:
    current = History().open().events[0]
    raw = codec.to_raw(current)
    v1 = {**raw, "schema_version": 1}
    v1["payload"] = {"title": raw["payload"]["title"], "service": "checkout", "sev": 1}
    event = codec.decode(orjson.dumps(v1))
    assert isinstance(event, ev.IncidentOpened)
    assert event.schema_version == 2
    assert event.payload.severity == "sev1"
    assert event.event_id == current.event_id


def test_v1_with_an_impossible_value_is_unreadable_not_guessed() -> None:
    raw = codec.to_raw(History().open().events[0])
    v1 = {**raw, "schema_version": 1, "payload": {"title": "t", "service": "s", "sev": 9}}
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode(orjson.dumps(v1))
    assert info.value.reason == "unsupported_version"


def test_committed_json_schema_matches_the_models() -> None:
    rendered = generate.render()
    for name, text in rendered.items():
        path = generate.JSON_DIR / name
        assert path.exists(), f"{name} missing: run `make schemas`"
        assert path.read_text() == text, f"{name} drifted from the models: run `make schemas`"
    committed = {p.name for p in generate.JSON_DIR.glob("*.schema.json")}
    assert committed == set(rendered), "stray or missing schema files: run `make schemas`"


def test_drift_check_fails_on_a_changed_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(generate, "JSON_DIR", tmp_path)
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    victim = next(tmp_path.glob("DirectiveIssued.schema.json"))
    victim.write_text(victim.read_text().replace("based_on_sequence", "based_on"))
    assert generate.main(["--check"]) == 1


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(codec.UnreadableRecord):
        codec.decode(data)


@given(st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10), max_size=6))
def test_arbitrary_objects_are_unreadable_with_a_reason(obj: dict[str, object]) -> None:
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode_raw(obj)
    assert info.value.reason in {"unknown_event_type", "unsupported_version", "invalid"}


def test_actor_of_new_event_is_kept() -> None:
    event = History().open().events[0]
    assert event.actor == ALICE


def test_a_nul_in_raw_tool_output_makes_the_record_unreadable() -> None:
    """No consumer can store U+0000 (PostgreSQL refuses it in text and jsonb): a record
    carrying one in a step's raw output is dead-lettered as invalid, not handed to the
    packager, whose read-model write would fail on it again and again."""
    [step] = [e for e in one_of_each() if e.event_type == "StepSucceeded"]
    raw = codec.to_raw(step)
    raw["payload"]["result"]["output"] = {"answer": "ok\x00"}
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode(orjson.dumps(raw))
    assert info.value.reason == "invalid" and "NUL" in info.value.detail
