"""Invariants 1, 2 and 4 at the executor, against real Kafka, PostgreSQL and the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from executor_harness import MALLORY, decided, has, of_type, step_recorded

from conn_core.state import DirectiveStatus
from conn_schemas import events as ev
from conn_schemas.values import (
    Actor,
    DrainWorkerPool,
    GatherState,
    RefusalReason,
    RestartDependencyTier,
    Verify,
)

pytestmark = pytest.mark.integration


async def test_same_directive_50_times_is_executed_once(make_harness: Any) -> None:
    h = await make_harness()
    proc = h.start_executor()
    inc = "inc-dup50"
    await h.open_incident(inc)
    drain = DrainWorkerPool(pool="cache-invalidation", region="us-east")
    key = await h.issue(inc, drain, copies=50)
    await h.wait_for(inc, step_recorded(key), what="the drain step", procs=(proc,))
    # A later directive on the same partition proves all 50 copies were consumed.
    sentinel = await h.issue(inc, Verify(regions=("us-east",)))
    events = await h.wait_for(inc, decided(sentinel), what="the sentinel", procs=(proc,))

    assert len(of_type(events, "DirectiveIssued", key)) == 50
    assert len(of_type(events, "DirectiveAccepted", key)) == 1
    assert len(of_type(events, "StepStarted", key)) == 1
    assert len(of_type(events, "StepSucceeded", key)) == 1
    assert not of_type(events, "DirectiveRefused", key)
    started = of_type(events, "StepStarted", key)[0]
    assert isinstance(started, ev.StepStarted) and started.payload.idempotency_key == key
    assert (await h.side_effects()).get(key) == 1
    assert await h.claim_status(key) == "succeeded"
    # Intent before action: StepStarted precedes the outcome in the incident's order.
    order = [e.event_type for e in events if e.correlation_id == key]
    assert order.index("StepStarted") < order.index("StepSucceeded")
    assert order.index("StateGathered") < order.index("DirectiveAccepted")
    # The incident record got a redacted summary, not the raw tool output.
    record = of_type(events, "IncidentRecordUpdated", key)[0]
    assert isinstance(record, ev.IncidentRecordUpdated)
    assert record.payload.delivered and "cache-invalidation" in record.payload.summary
    assert "namespace" not in record.payload.summary
    state = await h.state(inc)
    assert state.directives[key].status is DirectiveStatus.SUCCEEDED


async def test_directives_outside_authority_injected_into_kafka_are_refused(
    make_harness: Any,
) -> None:
    h = await make_harness()
    proc = h.start_executor()
    cases: dict[str, tuple[Any, Actor | None, RefusalReason]] = {
        "inc-reserved": (
            RestartDependencyTier(tier="orders-db", region="eu-west"),
            None,
            RefusalReason.RESERVED_TO_TEAM,
        ),
        "inc-target": (
            DrainWorkerPool(pool="payments-gateway", region="us-east"),
            None,
            RefusalReason.TARGET_NOT_ALLOWED,
        ),
        "inc-region": (
            DrainWorkerPool(pool="cache-invalidation", region="ap-south"),
            None,
            RefusalReason.REGION_NOT_ALLOWED,
        ),
        "inc-holder": (
            DrainWorkerPool(pool="cache-invalidation", region="us-east"),
            MALLORY,
            RefusalReason.NOT_CONN_HOLDER,
        ),
        "inc-service": (
            DrainWorkerPool(pool="cache-invalidation", region="us-east"),
            Actor.service("rogue-bot"),
            RefusalReason.NOT_HUMAN,
        ),
    }
    keys: dict[str, str] = {}
    for inc, (action, actor, _) in cases.items():
        await h.open_incident(inc)
        keys[inc] = await h.issue(inc, action, **({"actor": actor} if actor else {}))
    for inc, (_, _, reason) in cases.items():
        events = await h.wait_for(inc, decided(keys[inc]), what=f"refusal in {inc}", procs=(proc,))
        refused = of_type(events, "DirectiveRefused", keys[inc])
        assert len(refused) == 1, inc
        payload = refused[0].payload
        assert isinstance(payload, ev.DirectiveRefusedPayload)
        assert payload.reason is reason and payload.refused_by == "executor", (inc, payload)
        assert not of_type(events, "StepStarted", keys[inc])
        assert await h.claim_status(keys[inc]) == "refused"
    effects = await h.side_effects()
    assert not set(keys.values()) & set(effects)


async def test_gather_state_directive_reads_all_authority_regions(make_harness: Any) -> None:
    h = await make_harness()
    proc = h.start_executor()
    inc = "inc-gather"
    await h.open_incident(inc)
    key = await h.issue(inc, GatherState())
    events = await h.wait_for(inc, has("StateGathered", key), what="StateGathered", procs=(proc,))
    accepted = of_type(events, "DirectiveAccepted", key)
    assert len(accepted) == 1
    gathered = of_type(events, "StateGathered", key)[0]
    assert isinstance(gathered, ev.StateGathered) and gathered.payload.purpose == "directed"
    obs = gathered.payload.observation
    assert {m.region for m in obs.metrics} == {"us-east", "eu-west"}
    assert ("cache-invalidation", "us-east") in {(p.pool, p.region) for p in obs.pools}
    assert any(f.rule == "canary-10pct" and f.region == "eu-west" for f in obs.flags)
    assert not obs.errors
    assert (await h.side_effects()).get(key) is None
