"""Invariants 3, 4, 5 and 7 at the executor: it decides at the moment of acting, on
everything the incident's log holds by then, not only on the prefix before the
directive (DESIGN.md invariant 5: "a close, takeover, authority change or derived
hold that lands after the directive stops it"). Real executor process, Kafka,
PostgreSQL and simulator."""

from __future__ import annotations

from typing import Any

import pytest
from executor_harness import (
    RUNBOOK,
    VERIFIER,
    Harness,
    decided,
    has,
    of_type,
    step_recorded,
)

from conn_core.state import DirectiveStatus
from conn_schemas import events as ev
from conn_schemas.values import (
    DrainWorkerPool,
    RefusalReason,
    RestartDependencyTier,
    Verdict,
    VerificationCriteria,
    Verify,
)

pytestmark = pytest.mark.integration

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")
NARROWER = RUNBOOK.read_bytes().replace(
    b"    targets: [cache-invalidation, checkout-workers]", b"    targets: [checkout-workers]"
)


async def failing_snapshot(h: Harness, inc: str, verify_cid: str) -> None:
    """What the verifier appends for an explicit verify that finds the region down."""
    now = ev.utcnow()
    await h.record(
        inc,
        ev.VerificationSnapshot,
        ev.VerificationSnapshotPayload(
            trigger="directive",
            regions=(),
            criteria=VerificationCriteria(),
            verdict=Verdict.NOT_RECOVERED,
            detail="not recovered: us-east",
            window_started_at=now,
            window_ended_at=now,
        ),
        actor=VERIFIER,
        correlation_id=verify_cid,
    )


async def test_a_directive_queued_behind_a_change_executes_nothing(make_harness: Any) -> None:
    """The executor is behind (here: not running yet) while the log moves on past a
    directive. When it reaches the directive, `decide` on the prefix accepts it; the
    re-check against the partition's latest record refuses it."""
    h = await make_harness()
    cases = {
        "inc-q-close": RefusalReason.INCIDENT_CLOSED,
        "inc-q-takeover": RefusalReason.NOT_CONN_HOLDER,
        "inc-q-authority": RefusalReason.TARGET_NOT_ALLOWED,
        "inc-q-verdict": RefusalReason.ON_HOLD,
        "inc-q-hold": RefusalReason.ON_HOLD,
    }
    keys: dict[str, str] = {}
    for inc in cases:
        await h.open_incident(inc)
        verify = await h.issue(inc, Verify()) if inc == "inc-q-verdict" else ""
        keys[inc] = await h.issue(inc, DRAIN)
        if inc == "inc-q-close":
            await h.record(inc, ev.IncidentClosed, ev.IncidentClosedPayload(resolution="done"))
        elif inc == "inc-q-takeover":
            await h.take_over(inc)
        elif inc == "inc-q-authority":
            await h.declare(inc, NARROWER)
        elif inc == "inc-q-verdict":
            await failing_snapshot(h, inc, verify)
        else:  # a hold in the log only (the PostgreSQL fast path is not written here)
            await h.record(inc, ev.HoldDeclared, ev.HoldDeclaredPayload(detail="stop"))
    proc = h.start_executor()
    for inc, reason in cases.items():
        events = await h.wait_for(inc, decided(keys[inc]), what=f"decision in {inc}", procs=(proc,))
        refused = of_type(events, "DirectiveRefused", keys[inc])
        assert len(refused) == 1, (inc, [(e.event_type, e.correlation_id) for e in events])
        payload = refused[0].payload
        assert isinstance(payload, ev.DirectiveRefusedPayload)
        assert payload.reason is reason and payload.refused_by == "executor", (inc, payload)
        assert not of_type(events, "DirectiveAccepted", keys[inc])
        assert not of_type(events, "StepStarted", keys[inc])
        assert await h.claim_status(keys[inc]) == "refused"
    assert not set(keys.values()) & set(await h.side_effects()), "nothing executed"


async def test_a_change_between_step_started_and_the_side_effect_stops_it(
    make_harness: Any,
) -> None:
    """The last look, right before the side effect, sees a close that landed after
    StepStarted: the step is failed as never started, and nothing is executed."""
    h = await make_harness()
    proc = h.start_executor(fault="pause_before_side_effect=3")
    inc = "inc-gate-close"
    await h.open_incident(inc)
    key = await h.issue(inc, RESTART)
    await h.wait_for(inc, has("StepStarted", key), what="StepStarted", procs=(proc,))
    await h.record(inc, ev.IncidentClosed, ev.IncidentClosedPayload(resolution="fixed upstream"))
    events = await h.wait_for(inc, step_recorded(key), what="the stopped step", procs=(proc,))
    (failed,) = of_type(events, "StepFailed", key)
    assert isinstance(failed, ev.StepFailed)
    assert failed.payload.not_started and "closed" in failed.payload.error
    assert key not in await h.side_effects()
    assert await h.claim_status(key) == "failed"
    state = await h.state(inc)
    assert state.directives[key].status is DirectiveStatus.FAILED
    assert state.unverified_changes() == [], "nothing ran: nothing partial"


async def test_its_own_records_do_not_stop_it(make_harness: Any) -> None:
    """The re-checks must not refuse a directive because of its own pre-step gather,
    acceptance or StepStarted (and its own start is not counted twice against the
    blast radius: one restart per tier and region)."""
    h = await make_harness()
    proc = h.start_executor()
    inc = "inc-own"
    await h.open_incident(inc)
    key = await h.issue(inc, RESTART)
    events = await h.wait_for(inc, step_recorded(key), what="the restart", procs=(proc,))
    assert of_type(events, "StepSucceeded", key), [(e.event_type) for e in events]
    assert (await h.side_effects()).get(key) == 1


async def test_a_takeover_between_the_last_look_and_the_gate_stops_it(
    make_harness: Any,
) -> None:
    """Issue 15 (b): the gate's table holds holds, closes and the kill switch, not the
    holder. A takeover appended after the executor's last look but before its gate must
    still stop the step (the executor looks again once the gate has passed)."""
    h = await make_harness()
    proc = h.start_executor(fault="pause_before_gate=3")
    inc = "inc-gate-takeover"
    await h.open_incident(inc)
    key = await h.issue(inc, RESTART)
    await h.wait_for(inc, has("StepStarted", key), what="StepStarted", procs=(proc,))
    await h.take_over(inc)
    events = await h.wait_for(inc, step_recorded(key), what="the stopped step", procs=(proc,))
    (failed,) = of_type(events, "StepFailed", key)
    assert isinstance(failed, ev.StepFailed)
    assert failed.payload.not_started, failed.payload
    assert not of_type(events, "StepSucceeded", key)
    assert key not in await h.side_effects(), "a step of the old holder executed"
    assert await h.claim_status(key) == "failed"
