"""Semantically hostile but valid records (issue 14: "a consumer that meets a record
violating it dead-letters it and keeps going"; here the records are valid, entitled and
signed, but make no sense: steps without directives, verdicts for unknown steps, a
takeover accepted with no request, records after the close, everything twice, in any
order). The pure path every consumer runs on them — the fold (executor, verifier, the
API's fold), the packager's projection, takeover packet, its Markdown and the bridge
state, and the post-incident timeline — never raises: a consumer has nothing to crash
on, whatever a rightful producer appends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from builders import one_of_each
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conn_readmodel.projection import IncidentProjection, Where, project
from conn_readmodel.timeline import build_timeline, render_timeline_markdown
from conn_schemas import events as ev

TEMPLATES = [e for e in one_of_each() if e.incident_id != ev.GLOBAL_INCIDENT]
CORRELATIONS = ["c-a", "c-b", str(uuid.UUID(int=7))]
START = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


@st.composite
def hostile_history(draw: st.DrawFn) -> list[ev.Envelope]:
    opened = [e for e in TEMPLATES if e.event_type == "IncidentOpened"]
    picks = opened + draw(st.lists(st.sampled_from(TEMPLATES), min_size=10, max_size=60))
    out = []
    for i, template in enumerate(picks):
        update: dict[str, object] = {
            "incident_id": "inc-hostile",
            "event_id": uuid.uuid4(),
            "occurred_at": START + timedelta(seconds=draw(st.integers(-600, 600)) + i),
        }
        if draw(st.booleans()):
            update["correlation_id"] = draw(st.sampled_from(CORRELATIONS))
        out.append(template.model_copy(update=update))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=hostile_history())
def test_no_sequence_of_valid_records_makes_a_consumer_raise(history: list[ev.Envelope]) -> None:
    proj = IncidentProjection.new("inc-hostile")
    for offset, event in enumerate(history):
        rows = project(proj, event, Where("conn.events", 0, offset))
        assert rows.ledger["sequence"] == proj.state.sequence
        if rows.packet is not None:
            assert rows.packet.sha256 in rows.packet.markdown
    report = build_timeline(history)
    render_timeline_markdown(report)
