"""Invariant 2, fencing all the way: every claim transition is fenced by generation
and executor id; an executor that lost its partitions (frozen past its session
timeout) neither acts nor changes the claim or the ledger's view when it wakes up;
and once it regains its partitions it rebuilds its folds and serves its incidents."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from executor_harness import Harness, decided, has, of_type, step_recorded
from fixtures_services import Proc

from conn_core.state import DirectiveStatus
from conn_executor.claims import CLAIMS_DDL, ClaimStatus, ClaimStore
from conn_runtime.stops import STOPS_DDL, set_stop
from conn_schemas import events as ev
from conn_schemas.values import Action, DrainWorkerPool, GatherState, RestartDependencyTier

pytestmark = pytest.mark.integration

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def metric(proc: Any, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(proc.url + "/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def claim_row(h: Harness, key: str) -> asyncpg.Record:
    conn = await asyncpg.connect(h.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT status, executor_id, generation FROM executor_claims WHERE correlation_id=$1",
            key,
        )
        assert row is not None
        return row
    finally:
        await conn.close()


async def assert_claim_of_b(h: Harness, key: str, status: str) -> None:
    """The claim ended `status`, owned by executor B (the one that took the step over)."""
    row = await claim_row(h, key)
    assert row["status"] == status and row["executor_id"].startswith("executor-b"), dict(row)


async def executor_a_on_one_step(
    make_harness: Any, fault: str, incident: str, action: Action
) -> tuple[Harness, Proc, str]:
    """A harness whose executor A runs with `fault`, and one step of `action` issued on
    `incident` (its correlation id)."""
    h = await make_harness()
    a = h.start_executor("executor-a", fault=fault)
    await h.open_incident(incident)
    return h, a, await h.issue(incident, action)


async def b_takes_over_while_a_is_frozen(
    h: Harness, a: Proc, incident: str, key: str, verdict: str
) -> list[Any]:
    """Freeze A (SIGSTOP) past its session timeout, start B, which takes the partition
    over, and wait for B's `verdict` on the step; A is thawed whatever happens."""
    h.pause(a)
    try:
        b = h.start_executor("executor-b")
        return await h.wait_for(
            incident, has(verdict, key), what=f"B's {verdict}", procs=(b,), timeout=120
        )
    finally:
        h.unpause(a)


# --- the claim store, against real PostgreSQL --------------------------------------------------


async def test_every_claim_transition_is_fenced(fresh_database: str) -> None:
    pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=2)
    try:
        await pool.execute(CLAIMS_DDL)
        await pool.execute(STOPS_DDL)
        claims = ClaimStore(pool)

        async def claim(cid: str) -> None:
            # The stop it reads with the claim is the decision's, not the fence's: ignored.
            made, _stop = await claims.claim_reading_stop(
                correlation_id=cid,
                incident_id="inc-1",
                action="drain_worker_pool",
                topic="t",
                partition=0,
                offset=1,
                generation=1,
                executor_id="a",
            )
            assert made is not None

        await claim("c1")
        # b, in a newer generation, takes it over: a can neither start nor finish it.
        before = await claims.take_over("c1", generation=2, executor_id="b")
        assert before is not None and (before.executor_id, before.generation) == ("a", 1)
        gate = await claims.start("c1", generation=1, executor_id="a", incident_id="inc-1")
        assert gate.fenced and not gate.started
        assert not await claims.finish("c1", ClaimStatus.REFUSED, generation=1, executor_id="a")
        assert await claims.take_over("c1", generation=1, executor_id="a") is None
        current = await claims.get("c1")
        assert current is not None and current.status is ClaimStatus.CLAIMED
        assert (current.executor_id, current.generation) == ("b", 2)
        gate = await claims.start("c1", generation=2, executor_id="b", incident_id="inc-1")
        assert gate.started
        # a late finish by the old owner changes nothing; the owner's does
        assert not await claims.finish("c1", ClaimStatus.SUCCEEDED, generation=1, executor_id="a")
        assert await claims.finish("c1", ClaimStatus.UNKNOWN, generation=2, executor_id="b")
        done = await claims.get("c1")
        assert done is not None and done.status is ClaimStatus.UNKNOWN
        assert await claims.take_over("c1", generation=9, executor_id="c") is None, "final"

        # The gate also reads the stops table in the same statement: a stop wins.
        await claim("c2")
        await set_stop(
            pool,
            "inc-1",
            engaged=True,
            reason="hold",
            changed_by="alice",
            changed_at=datetime.now(UTC),
        )
        gate = await claims.start("c2", generation=1, executor_id="a", incident_id="inc-1")
        assert not gate.started and gate.stop_scope == "inc-1" and gate.stop_reason == "hold"
        assert (await claims.get("c2")).status is ClaimStatus.CLAIMED  # type: ignore[union-attr]
        await set_stop(
            pool,
            "_global",
            engaged=True,
            reason="kill",
            changed_by="root",
            changed_at=datetime.now(UTC),
        )
        gate = await claims.start("c2", generation=1, executor_id="a", incident_id="inc-9")
        assert not gate.started and gate.stop_scope == "_global"
        # a started claim moves only to an outcome
        await claim("c3")
        assert not await claims.finish("c3", ClaimStatus.UNKNOWN, generation=1, executor_id="b")
    finally:
        await pool.close()


# --- frozen executors ------------------------------------------------------------------------


async def test_a_frozen_executor_does_not_act_after_another_took_its_step(
    make_harness: Any,
) -> None:
    """A is frozen between StepStarted and its side effect, past its session timeout;
    B takes the partition over and reports the step as never started. When A wakes
    up it must neither act nor add anything: nothing was executed."""
    inc = "inc-zombie-gate"
    h, a, key = await executor_a_on_one_step(make_harness, "pause_before_side_effect=4", inc, DRAIN)
    await h.wait_for(inc, has("StepStarted", key), what="A's StepStarted", procs=(a,))
    events = await b_takes_over_while_a_is_frozen(h, a, inc, key, "StepFailed")
    (failed,) = of_type(events, "StepFailed", key)
    assert isinstance(failed, ev.StepFailed) and failed.payload.not_started

    async def a_looked_again() -> bool:
        # A's last look before the gate saw the step decided elsewhere (or A acted).
        seen = await metric(a, "conn_executor_rechecks_total", outcome="duplicate_directive")
        return seen >= 1 or key in await h.side_effects()

    await until(a_looked_again, "executor A to wake up and look again")
    assert key not in await h.side_effects(), "the frozen executor acted after losing the step"
    events = await h.events(inc, key)
    assert len(of_type(events, "StepFailed")) == 1 and not of_type(events, "StepSucceeded")
    await assert_claim_of_b(h, key, "failed")
    state = await h.state(inc)
    assert state.directives[key].status is DirectiveStatus.FAILED
    assert state.hold is None and state.unverified_changes() == []


async def test_an_executor_frozen_between_its_gate_and_the_call_does_not_act(
    make_harness: Any,
) -> None:
    """A passed its fenced gate (the claim is `started`) and froze right before the
    call, past its session timeout; B took the incident over and, finding the claim
    past the gate, reported the step as unknown (never re-run). When A wakes up it must
    not make the call: its claim and its last look are older than its bound."""
    inc = "inc-zombie-call"
    h, a, key = await executor_a_on_one_step(make_harness, "pause_after_gate=2", inc, DRAIN)
    await h.wait_for(inc, has("StepStarted", key), what="A's StepStarted", procs=(a,))

    async def gated() -> bool:
        return (await claim_row(h, key))["status"] == "started"

    await until(gated, "A's gate", timeout=30)
    await b_takes_over_while_a_is_frozen(h, a, inc, key, "StepOutcomeUnknown")

    def a_spoke(events: list[Any]) -> bool:  # not acting, or acting late
        return bool(of_type(events, "StepFailed", key) or of_type(events, "StepSucceeded", key))

    events = await h.wait_for(inc, a_spoke, what="A's word on the step", procs=(a,), timeout=60)
    assert key not in await h.side_effects(), "the frozen executor acted after losing the step"
    assert not of_type(events, "StepSucceeded", key)
    (failed,) = of_type(events, "StepFailed", key)
    assert isinstance(failed, ev.StepFailed) and failed.payload.not_started
    assert "between the gate and the call" in failed.payload.error, failed.payload.error
    state = await h.state(inc)
    assert state.directives[key].status is DirectiveStatus.OUTCOME_UNKNOWN  # B's, first
    await assert_claim_of_b(h, key, "unknown")


async def test_a_zombies_late_finish_changes_nothing(make_harness: Any) -> None:
    """A acted, then froze before recording the outcome; B reports it unknown. A's
    late StepSucceeded changes neither the claim nor the ledger's view."""
    inc = "inc-zombie-late"
    h, a, key = await executor_a_on_one_step(
        make_harness, "pause_after_side_effect=6", inc, RESTART
    )

    async def landed() -> bool:
        return (await h.side_effects()).get(key) == 1

    await until(landed, "A's side effect at the simulator")
    await b_takes_over_while_a_is_frozen(h, a, inc, key, "StepOutcomeUnknown")
    events = await h.wait_for(
        inc, has("StepSucceeded", key), what="A's late outcome", procs=(a,), timeout=60
    )
    order = [e.event_type for e in events if e.correlation_id == key]
    assert order.index("StepOutcomeUnknown") < order.index("StepSucceeded"), order
    state = await h.state(inc)
    record = state.directives[key]
    assert record.status is DirectiveStatus.OUTCOME_UNKNOWN and record.result is None
    assert state.conflicting_records >= 1
    assert [d.correlation_id for d in state.unverified_changes()] == [key]
    await assert_claim_of_b(h, key, "unknown")
    assert (await h.side_effects()).get(key) == 1


async def test_an_executor_frozen_past_its_session_timeout_serves_its_incidents_again(
    make_harness: Any,
) -> None:
    """Frozen (SIGSTOP) mid-step for longer than its session timeout, the executor is
    expelled from its group; when it resumes, its in-flight handler finishes while it
    rejoins and gets its partitions back. It must rebuild the incident's fold from
    offset 0 and decide the directives issued meanwhile (and after) on the full
    history, not refuse them as "not open"."""
    h = await make_harness()
    proc = h.start_executor(fault="pause_after_side_effect=30")
    inc = f"inc-frozen-{uuid.uuid4().hex[:6]}"
    await h.open_incident(inc)
    first = await h.issue(inc, DRAIN)

    async def landed() -> bool:
        return (await h.side_effects()).get(first) == 1

    await until(landed, "the first step's side effect")  # the handler is now in flight
    assert await h.group_members() == 1
    h.pause(proc)
    try:

        async def expelled() -> bool:
            return await h.group_members() == 0

        await until(expelled, "the frozen executor to be expelled from its group")
        during = await h.issue(inc, GatherState())
    finally:
        h.unpause(proc)
    events = await h.wait_for(
        inc, step_recorded(first), what="the in-flight step", procs=(proc,), timeout=120
    )
    assert of_type(events, "StepSucceeded", first)
    events = await h.wait_for(
        inc, decided(during), what="the directive issued during the pause", procs=(proc,)
    )
    refused = of_type(events, "DirectiveRefused", during)
    assert of_type(events, "DirectiveAccepted", during), [e.payload for e in refused]
    after = await h.issue(inc, GatherState())
    events = await h.wait_for(
        inc, has("StateGathered", after), what="a directive after the pause", procs=(proc,)
    )
    assert of_type(events, "DirectiveAccepted", after)
