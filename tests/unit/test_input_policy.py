"""The input policy of the contract (issue 14): hostile strings, identifiers and sizes
against the event models, the API request models and the codec.

Oracles come from the policy (DESIGN.md: "Targets, regions and teams are strict
identifiers"; malformed records are dead-lettered with a reason), not from the code:
- free text is NFC, carries no control character (only documented multi-line fields
  accept "\\n"), and is bounded;
- identifiers that map to Kubernetes names are DNS-1123 labels;
- the global-control id is never an incident id;
- anything a model accepts, the codec encodes and decodes to the same event; anything
  it refuses raises ValidationError (or UnreadableRecord from the codec), nothing else.
"""

from __future__ import annotations

import re
import unicodedata

import orjson
import pytest
from builders import ALICE, History, one_of_each
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from conn_core.fold import fold
from conn_core.rules import Refused, decide
from conn_core.state import ControlState
from conn_schemas import codec
from conn_schemas import events as ev
from conn_schemas.values import (
    GLOBAL_INCIDENT,
    Detail,
    DrainWorkerPool,
    IncidentId,
    Label,
    Line,
    RefusalReason,
    Target,
    WorkerPoolExpectation,
    clean_text,
    fit_identifier,
    fit_token,
)

CONTROL = ControlState()
LINE: TypeAdapter[str] = TypeAdapter(Line)
DETAIL: TypeAdapter[str] = TypeAdapter(Detail)
LABEL: TypeAdapter[str] = TypeAdapter(Label)
TARGET: TypeAdapter[str] = TypeAdapter(Target)
INCIDENT: TypeAdapter[str] = TypeAdapter(IncidentId)

BIDI = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
FORBIDDEN_EVERYWHERE = (
    [chr(c) for c in range(0x20) if c != 0x0A] + ["\x7f", *map(chr, range(0x80, 0xA0))]
) + list(BIDI + "\u2028\u2029")


def is_forbidden(ch: str, *, multiline: bool) -> bool:
    """The oracle, written from the policy (not from values.py)."""
    if ch == "\n":
        return not multiline
    return ch in FORBIDDEN_EVERYWHERE or 0xD800 <= ord(ch) <= 0xDFFF


hostile_char = st.one_of(
    st.sampled_from([*FORBIDDEN_EVERYWHERE, "\n", "\r", "\t", "\ud800", "\udfff"]),
    st.characters(codec="utf-8"),
    st.sampled_from(["e\u0301", "\u212b", "\ufb01", "\u0958", "/", ".", "..", "<", "#"]),
)
hostile_text = st.lists(hostile_char, max_size=40).map("".join)


# --- free text -------------------------------------------------------------------------


@given(hostile_text)
def test_free_text_is_nfc_and_free_of_control_characters(text: str) -> None:
    for adapter, multiline in ((LINE, False), (DETAIL, True)):
        try:
            out = adapter.validate_python(text)
        except ValidationError:
            assert any(is_forbidden(ch, multiline=multiline) for ch in text)
            continue
        assert out == unicodedata.normalize("NFC", text)
        assert not any(is_forbidden(ch, multiline=multiline) for ch in out)


@pytest.mark.parametrize("bad", ["a\x00b", "a\rb", "a\tb", "\x1b[31m", "x\u202ey", "a\u2028b"])
def test_control_characters_are_refused_in_titles_and_details(bad: str) -> None:
    with pytest.raises(ValidationError):
        LINE.validate_python(bad)
    with pytest.raises(ValidationError):
        DETAIL.validate_python(bad)


def test_only_documented_multiline_fields_accept_newlines() -> None:
    assert DETAIL.validate_python("line one\nline two") == "line one\nline two"
    with pytest.raises(ValidationError):
        LINE.validate_python("title\n## Not on hold")


def test_length_is_bounded_after_normalisation() -> None:
    LINE.validate_python("x" * 300)
    with pytest.raises(ValidationError):
        LINE.validate_python("x" * 301)
    # U+0958 expands under NFC (a composition exclusion): 300 of them are 600 after it.
    with pytest.raises(ValidationError):
        LINE.validate_python("\u0958" * 300)


@given(hostile_text, st.integers(min_value=1, max_value=50), st.booleans())
def test_clean_text_always_fits_the_policy(text: str, limit: int, multiline: bool) -> None:
    out = clean_text(text, limit, multiline=multiline)
    assert len(out) <= limit
    (DETAIL if multiline else LINE).validate_python(out)


# --- identifiers -----------------------------------------------------------------------

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
BAD_NAMES = [
    "",
    ".",
    "..",
    "../eu-west",
    "us-east/../eu-west",
    "a/b",
    "a.b",
    "US-EAST",
    "-us",
    "us-",
    "us east",
    "us_east",
    "x" * 64,
    "é",
    "us\x00",
    "us\n",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_that_map_to_kubernetes_are_dns_labels(bad: str) -> None:
    with pytest.raises(ValidationError):
        LABEL.validate_python(bad)
    with pytest.raises(ValidationError):
        DrainWorkerPool(pool=bad, region="us-east")
    with pytest.raises(ValidationError):
        DrainWorkerPool(pool="checkout-workers", region=bad)


@given(st.text(alphabet="abcz09-./_A \x00", max_size=70))
def test_label_oracle(name: str) -> None:
    ok = DNS_LABEL.fullmatch(name) is not None
    try:
        LABEL.validate_python(name)
    except ValidationError:
        assert not ok
    else:
        assert ok


def test_targets_are_one_label_or_flag_slash_rule() -> None:
    assert TARGET.validate_python("checkout-pricing/canary-10pct")
    for bad in ("a/b/c", "a/", "/a", "a//b", "../a", "a/..", "a/.", "A/b"):
        with pytest.raises(ValidationError):
            TARGET.validate_python(bad)


@pytest.mark.parametrize(
    "bad",
    [GLOBAL_INCIDENT, "GLOBAL", "_GLOBAL", "", ".", "..", "a/b", "a.b", "-x", "x-", "x" * 129],
)
def test_reserved_and_malformed_incident_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        INCIDENT.validate_python(bad)


def test_the_global_id_is_refused_on_incident_events_and_required_on_kill_switch() -> None:
    opened = History().open().events[0]
    raw = codec.to_raw(opened)
    raw["incident_id"] = GLOBAL_INCIDENT
    with pytest.raises(codec.UnreadableRecord) as info:
        codec.decode(orjson.dumps(raw))
    assert info.value.reason == "invalid" and "reserved" in info.value.detail
    kill = codec.to_raw(History().kill_switch())
    kill["incident_id"] = "inc-1"
    with pytest.raises(codec.UnreadableRecord):
        codec.decode(orjson.dumps(kill))


def test_api_refuses_the_global_id_for_a_new_incident() -> None:
    from conn_api.models import OpenIncident

    with pytest.raises(ValidationError):
        OpenIncident(title="t", service="checkout", incident_id=GLOBAL_INCIDENT)


@given(st.text(max_size=300))
def test_fitted_foreign_names_and_ids_are_valid(raw: str) -> None:
    from conn_schemas.values import Identifier, Token

    TypeAdapter(Identifier).validate_python(fit_identifier(raw))
    TypeAdapter(Token).validate_python(fit_token(raw))


# --- lists are bounded ------------------------------------------------------------------


def test_every_list_and_map_in_the_contract_is_bounded() -> None:
    """Walk every generated JSON Schema: each array has maxItems, each map
    maxProperties, each string maxLength, pattern or enum (or a format)."""
    from conn_schemas import generate

    unbounded: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            t = node.get("type")
            if t == "array" and "maxItems" not in node and "prefixItems" not in node:
                unbounded.append(where)
            extra = node.get("additionalProperties", False)
            if t == "object" and extra is not False and "maxProperties" not in node:
                unbounded.append(where)
            if t == "string" and not ({"maxLength", "enum", "const", "format"} & node.keys()):
                unbounded.append(where)
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    for name, text in generate.render().items():
        if name == "TakeoverPacket.schema.json" or name.endswith(".schema.json"):
            walk(orjson.loads(text), name)
    # RecordNoteResult is an adapter return value, never carried in an event.
    assert unbounded == []


def test_a_directive_with_too_many_regions_is_refused() -> None:
    from conn_api.models import DirectiveRequest

    regions = [f"r{i}" for i in range(9)]
    with pytest.raises(ValidationError):
        DirectiveRequest.model_validate(
            {"action": {"action": "verify", "regions": regions}, "based_on_sequence": 0}
        )


# --- regions must be declared by the authority ------------------------------------------


def test_an_undeclared_region_is_refused_in_the_action_and_in_the_expectation() -> None:
    h = History().open().declare()
    state = fold(h.events, h.incident_id)
    for payload in (
        ev.DirectiveIssuedPayload(
            action=DrainWorkerPool(pool="cache-invalidation", region="ap-south"),
            based_on_sequence=state.sequence,
        ),
        ev.DirectiveIssuedPayload(
            action=DrainWorkerPool(pool="cache-invalidation", region="us-east"),
            expectation=WorkerPoolExpectation(
                pool="cache-invalidation", region="ap-south", drained=False
            ),
            based_on_sequence=state.sequence,
        ),
    ):
        decision = decide(state, payload, ALICE, CONTROL)
        assert isinstance(decision, Refused)
        assert decision.reason is RefusalReason.REGION_NOT_ALLOWED
        assert "ap-south" in decision.detail and "not declared" in decision.detail


# --- the codec: accepted means round-trips; refused means ValidationError -----------------

TEXT_FIELDS = [
    ("IncidentOpened", ("payload", "title")),
    ("HoldDeclared", ("payload", "detail")),
    ("IncidentClosed", ("payload", "resolution")),
    ("AlertReceived", ("payload", "summary")),
    ("DirectiveIssued", ("payload", "rationale")),
    ("DirectiveIssued", ("incident_id",)),
    ("DirectiveIssued", ("payload", "action", "region")),
    ("TakeoverRequested", ("payload", "to_team")),
    ("IncidentOpened", ("actor", "id")),
]


SAMPLES = {e.event_type: codec.to_raw(e) for e in one_of_each()}


def _sample(event_type: str) -> dict[str, object]:
    raw = orjson.loads(orjson.dumps(SAMPLES[event_type]))
    assert isinstance(raw, dict)
    if event_type == "DirectiveIssued":
        raw["payload"]["action"] = {
            "action": "drain_worker_pool",
            "pool": "cache-invalidation",
            "region": "us-east",
        }
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TEXT_FIELDS), hostile_text)
def test_codec_round_trips_what_the_model_accepts(
    field: tuple[str, tuple[str, ...]], value: str
) -> None:
    event_type, path = field
    raw = _sample(event_type)
    node = raw
    for key in path[:-1]:
        node = node[key]  # type: ignore[assignment]
    node[path[-1]] = value  # type: ignore[index]
    cls = ev.EVENT_TYPES[event_type]
    try:
        event = cls.model_validate(raw)
    except ValidationError:
        # The codec refuses the same record with a reason, and nothing else.
        try:
            wire = orjson.dumps(raw)
        except orjson.JSONEncodeError:
            return  # a lone surrogate cannot even be written as UTF-8 JSON
        with pytest.raises(codec.UnreadableRecord) as info:
            codec.decode(wire)
        assert info.value.reason == "invalid"
        return
    assert codec.decode(codec.encode(event)) == event


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text.filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_decode_of_any_mutated_record_is_an_event_or_a_dead_letter_reason(
    event_type: str, data: st.DataObject
) -> None:
    raw = _sample(event_type)
    path = data.draw(st.sampled_from(_paths(raw)))
    node: object = raw
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = data.draw(json_value)  # type: ignore[index]
    try:
        wire = orjson.dumps(raw)
    except orjson.JSONEncodeError:
        return  # not representable as JSON (e.g. an integer beyond 64 bits)
    try:
        event = codec.decode(wire)
    except codec.UnreadableRecord as exc:
        assert exc.reason in {
            "invalid",
            "unknown_event_type",
            "unsupported_version",
            "not_an_object",
        }
        return
    assert codec.decode(codec.encode(event)) == event
