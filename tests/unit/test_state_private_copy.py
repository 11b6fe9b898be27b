"""`conn_core.state.private_copy`: the executor's snapshot of a live fold (a handler
works on it across awaits while the runtime moves the live fold on).

Oracle: `copy.deepcopy`, which it replaces. For folds of arbitrary (hostile but valid)
histories, the copy is equal to the deep copy, shares no mutable object (container or
dataclass) with the original, and folding more records into the copy, or editing it,
leaves the original exactly as it was."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from builders import History, one_of_each
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from conn_core.fold import evolve
from conn_core.state import DirectiveStatus, IncidentState, private_copy
from conn_schemas import events as ev
from conn_schemas.values import DrainWorkerPool

TEMPLATES = [e for e in one_of_each() if e.incident_id != ev.GLOBAL_INCIDENT]
CORRELATIONS = ["c-a", "c-b", str(uuid.UUID(int=7))]
START = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


@st.composite
def history(draw: st.DrawFn) -> list[ev.Envelope]:
    opened = [e for e in TEMPLATES if e.event_type == "IncidentOpened"]
    picks = opened + draw(st.lists(st.sampled_from(TEMPLATES), min_size=5, max_size=50))
    out = []
    for i, template in enumerate(picks):
        update: dict[str, object] = {
            "incident_id": "inc-copy",
            "event_id": uuid.uuid4(),
            "occurred_at": START + timedelta(seconds=i),
        }
        if draw(st.booleans()):
            update["correlation_id"] = draw(st.sampled_from(CORRELATIONS))
        out.append(template.model_copy(update=update))
    return out


def mutable_ids(value: Any, seen: dict[int, Any] | None = None) -> dict[int, Any]:
    """id -> object of every mutable container and dataclass reachable from `value`
    (frozen contract models are immutable and not walked into)."""
    seen = {} if seen is None else seen
    if isinstance(value, BaseModel) and value.model_config.get("frozen"):
        return seen
    if isinstance(value, dict | list | set):
        seen[id(value)] = value
        items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
        for k, v in items:
            mutable_ids(k, seen)
            mutable_ids(v, seen)
    elif isinstance(value, tuple | frozenset):
        for v in value:
            mutable_ids(v, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        seen[id(value)] = value
        for f in dataclasses.fields(value):
            mutable_ids(getattr(value, f.name), seen)
    return seen


def folded(events: list[ev.Envelope]) -> IncidentState:
    state = IncidentState(incident_id="inc-copy")
    for event in events:
        evolve(state, event)
    return state


def check(state: IncidentState, more: list[ev.Envelope]) -> None:
    before = copy.deepcopy(state)
    mine = private_copy(state)
    assert mine == before
    assert type(mine) is IncidentState
    shared = set(mutable_ids(state)) & set(mutable_ids(mine))
    assert not shared, [type(mutable_ids(state)[i]).__name__ for i in shared]
    for event in more:
        evolve(mine, event)
    for record in mine.directives.values():
        record.status = DirectiveStatus.REFUSED
    mine.snapshot_correlations.add("edited")
    mine.seen_event_ids.clear()
    assert state == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=history(), more=history())
def test_a_private_copy_is_a_deep_copy_that_shares_nothing_mutable(
    events: list[ev.Envelope], more: list[ev.Envelope]
) -> None:
    check(folded(events), more[1:])


def test_a_real_step_history() -> None:
    h = History("inc-copy").open()
    h.declare()
    action = DrainWorkerPool(pool="checkout-workers", region="us-east")
    cid = h.direct(action)
    h.accept(cid, action)
    h.start(cid, action)
    h.succeed(cid, action)
    h.hold()
    later = History("inc-copy")
    later.resume()
    state = folded(h.events)
    assert state.directives and state.hold is not None
    check(state, later.events)
