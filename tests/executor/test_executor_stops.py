"""Invariants 6 and 7 at the executor: holds, the kill switch, and refusals that hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from executor_harness import ALICE, decided, has, of_type, step_recorded

from conn_core.state import DirectiveStatus
from conn_runtime.stops import GLOBAL_SCOPE, STOPS_DDL, set_stop
from conn_schemas import events as ev
from conn_schemas.values import (
    DisableFlagRule,
    DrainWorkerPool,
    FlagRuleExpectation,
    HoldReason,
    RefusalReason,
)

pytestmark = pytest.mark.integration

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
CANARY_EU = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")


async def _stop(dsn: str, scope: str, engaged: bool, reason: str = "test") -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(STOPS_DDL)
        await set_stop(
            conn,
            scope,
            engaged=engaged,
            reason=reason,
            changed_by="alice",
            changed_at=datetime.now(UTC),
        )
    finally:
        await conn.close()


def _refusal(events: list[Any], key: str) -> ev.DirectiveRefusedPayload:
    refused = of_type(events, "DirectiveRefused", key)
    assert len(refused) == 1, [(e.event_type, e.correlation_id) for e in events]
    payload = refused[0].payload
    assert isinstance(payload, ev.DirectiveRefusedPayload)
    return payload


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_hold_during_a_step_lets_it_finish_and_refuses_the_next_until_resume(
    make_harness: Any,
) -> None:
    h = await make_harness()
    proc = h.start_executor(fault="pause_after_side_effect=3")
    inc = "inc-hold"
    await h.open_incident(inc)
    running = await h.issue(inc, DRAIN)
    await h.wait_for(inc, has("StepStarted", running), what="StepStarted", procs=(proc,))
    # The commander holds while the step runs (as the directive API does: log + PostgreSQL).
    await h.append(
        ev.new_event(
            ev.HoldDeclared,
            incident_id=inc,
            payload=ev.HoldDeclaredPayload(detail="bridge says stop"),
            actor=ALICE,
            producer="directive-api",
        )
    )
    await _stop(h.dsn, inc, True, "bridge says stop")
    events = await h.wait_for(inc, step_recorded(running), what="the running step", procs=(proc,))
    assert of_type(events, "StepSucceeded", running), "the step in flight finishes and is recorded"

    blocked = await h.issue(inc, CANARY_EU)
    events = await h.wait_for(inc, decided(blocked), what="the next directive", procs=(proc,))
    assert _refusal(events, blocked).reason is RefusalReason.ON_HOLD
    assert not of_type(events, "StepStarted", blocked)

    await h.append(
        ev.new_event(
            ev.ResumeDirected,
            incident_id=inc,
            payload=ev.ResumeDirectedPayload(detail="go"),
            actor=ALICE,
            producer="directive-api",
        )
    )
    await _stop(h.dsn, inc, False, "resumed")
    after = await h.issue(inc, CANARY_EU)
    events = await h.wait_for(inc, step_recorded(after), what="the resumed step", procs=(proc,))
    assert of_type(events, "StepSucceeded", after)

    effects = await h.side_effects()
    assert effects.get(running) == 1 and blocked not in effects and effects.get(after) == 1
    async with httpx.AsyncClient(timeout=5) as client:
        metrics = (await client.get(proc.url + "/metrics")).text
    assert _metric(metrics, "conn_executor_side_effects_after_stop_total") == 0
    assert _metric(metrics, "conn_executor_containment_seconds_count") >= 1


async def test_stop_between_step_started_and_side_effect_prevents_it(make_harness: Any) -> None:
    h = await make_harness()
    proc = h.start_executor(fault="pause_before_side_effect=3")
    inc = "inc-late-stop"
    await h.open_incident(inc)
    key = await h.issue(inc, DRAIN)
    await h.wait_for(inc, has("StepStarted", key), what="StepStarted", procs=(proc,))
    await _stop(h.dsn, inc, True, "hold thrown mid-step")  # only PostgreSQL knows yet
    events = await h.wait_for(inc, has("StepFailed", key), what="StepFailed", procs=(proc,))
    failed = of_type(events, "StepFailed", key)[0]
    assert isinstance(failed, ev.StepFailed)
    assert failed.payload.error.startswith("stopped before side effect")
    assert key not in await h.side_effects()
    assert await h.claim_status(key) == "failed"


async def test_kill_switch_from_postgres_and_from_conn_control(make_harness: Any) -> None:
    h = await make_harness()
    await _stop(h.dsn, GLOBAL_SCOPE, True, "everyone stop")  # set before the executor starts
    proc = h.start_executor()
    inc = "inc-kill"
    await h.open_incident(inc)
    first = await h.issue(inc, DRAIN)
    events = await h.wait_for(inc, decided(first), what="a decision", procs=(proc,))
    assert _refusal(events, first).reason is RefusalReason.KILL_SWITCH

    # Released in PostgreSQL, engaged on conn.control only: the control loop must stop it.
    await _stop(h.dsn, GLOBAL_SCOPE, False, "released")
    engaged = ev.new_event(
        ev.KillSwitchEngaged,
        incident_id=ev.GLOBAL_INCIDENT,
        payload=ev.KillSwitchEngagedPayload(reason="broadcast stop"),
        actor=ALICE,
        producer="directive-api",
    )
    await h.producer.append(engaged, topic=h.topics.control)
    # The control loop is independent of conn.events: poll until a directive is refused by
    # it (containment takes a moment). Every directive is checked, not only the last one.
    issued: list[str] = []
    for _ in range(20):
        key = await h.issue(inc, DRAIN)
        issued.append(key)
        events = await h.wait_for(inc, decided(key), what="a decision", procs=(proc,))
        if of_type(events, "DirectiveRefused", key) and (
            _refusal(events, key).reason is RefusalReason.KILL_SWITCH
        ):
            break
    else:
        raise AssertionError("the kill switch on conn.control never stopped a directive")
    # Once contained, it stays contained: every later directive is refused by it.
    for _ in range(3):
        key = await h.issue(inc, DRAIN)
        issued.append(key)
        events = await h.wait_for(inc, decided(key), what="a decision", procs=(proc,))
        assert _refusal(events, key).reason is RefusalReason.KILL_SWITCH, key
    effects = set(await h.side_effects())
    contained_from = next(
        i
        for i, key in enumerate(issued)
        if of_type(events, "DirectiveRefused", key)
        and _refusal(events, key).reason is RefusalReason.KILL_SWITCH
    )
    assert not effects & {first, *issued[contained_from:]}, "executed under the kill switch"
    # Before containment at most one drain may have run (the engagement was still in
    # flight); its step is then unverified and every other directive was refused.
    ran = effects & set(issued[:contained_from])
    assert len(ran) <= 1, ran


async def test_expectation_conflict_is_refused_and_the_fold_holds(make_harness: Any) -> None:
    h = await make_harness("flag_conflict")
    proc = h.start_executor()
    inc = "inc-conflict"
    await h.open_incident(inc)
    key = await h.issue(
        inc,
        DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="us-east"),
        expectation=FlagRuleExpectation(
            flag="checkout-pricing", rule="canary-10pct", region="us-east", enabled=True
        ),
    )
    events = await h.wait_for(inc, decided(key), what="a decision", procs=(proc,))
    refusal = _refusal(events, key)
    assert refusal.reason is RefusalReason.EXPECTATION_CONFLICT and refusal.refused_by == "executor"
    gathered = of_type(events, "StateGathered", key)
    assert len(gathered) == 1 and isinstance(gathered[0], ev.StateGathered)
    assert gathered[0].payload.purpose == "pre_step" and gathered[0].payload.conflicts
    assert not of_type(events, "DirectiveAccepted", key)
    state = await h.state(inc)
    assert state.hold is not None and state.hold.reason is HoldReason.EXPECTATION_CONFLICT
    assert state.directives[key].status is DirectiveStatus.REFUSED

    nxt = await h.issue(inc, DRAIN)
    events = await h.wait_for(inc, decided(nxt), what="the next decision", procs=(proc,))
    assert _refusal(events, nxt).reason is RefusalReason.ON_HOLD
    assert not (set(await h.side_effects()) & {key, nxt})


async def test_a_side_effect_that_lands_but_answers_late_is_outcome_unknown(
    make_harness: Any,
) -> None:
    """Invariant 2: a call that times out may have landed. It is re-gathered and
    reported as StepOutcomeUnknown (never StepFailed, never retried), listed as a
    partial change, and verified later against the state gathered before it."""
    h = await make_harness()
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.post(h.sim.url + "/sim/faults", json={"mutation_delay_seconds": 4})
        r.raise_for_status()
    proc = h.start_executor(env={"CONN_EXECUTOR_STEP_TIMEOUT": "1"})
    inc = "inc-late-answer"
    await h.open_incident(inc)
    key = await h.issue(inc, DRAIN)
    events = await h.wait_for(inc, step_recorded(key), what="the timed-out step", procs=(proc,))
    assert not of_type(events, "StepFailed", key) and not of_type(events, "StepSucceeded", key)
    unknown = of_type(events, "StepOutcomeUnknown", key)
    assert len(unknown) == 1 and isinstance(unknown[0], ev.StepOutcomeUnknown)
    assert "may have landed" in unknown[0].payload.reason
    assert (await h.side_effects()).get(key) == 1, "it landed at the target, exactly once"
    # Re-gathered after the timeout: the pool is observed as the call left it.
    pools = unknown[0].payload.observation.pools
    assert [(p.pool, p.region, p.desired_replicas) for p in pools] == [
        ("cache-invalidation", "us-east", 0)
    ]
    assert await h.claim_status(key) == "unknown"
    state = await h.state(inc)
    record = state.directives[key]
    assert record.status is DirectiveStatus.OUTCOME_UNKNOWN
    assert record.pre_step is not None, "the pre-step state it will be verified against"
    assert [d.correlation_id for d in state.unverified_changes()] == [key]
    assert state.hold is None, "not a failed step: its outcome is unknown, verification decides"


async def test_a_side_effect_that_never_answers_is_outcome_unknown_too(make_harness: Any) -> None:
    h = await make_harness()
    proc = h.start_executor(fault="slow_side_effect=5", env={"CONN_EXECUTOR_STEP_TIMEOUT": "0.5"})
    inc = "inc-timeout"
    await h.open_incident(inc)
    key = await h.issue(inc, DRAIN)
    events = await h.wait_for(inc, step_recorded(key), what="the timed-out step", procs=(proc,))
    assert not of_type(events, "StepFailed", key)
    (unknown,) = of_type(events, "StepOutcomeUnknown", key)
    assert isinstance(unknown, ev.StepOutcomeUnknown)
    pools = unknown.payload.observation.pools
    assert [(p.pool, p.desired_replicas > 0) for p in pools] == [("cache-invalidation", True)]
    assert key not in await h.side_effects()
    state = await h.state(inc)
    assert state.directives[key].status is DirectiveStatus.OUTCOME_UNKNOWN
