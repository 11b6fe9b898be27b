"""Invariant 2 under crashes and rebalances: never re-run, never lose a step."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from executor_harness import decided, has, of_type

from conn_core.state import DirectiveStatus
from conn_schemas import events as ev
from conn_schemas.values import DisableFlagRule, DrainWorkerPool, RestartDependencyTier

pytestmark = pytest.mark.integration


async def _until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_sigkill_between_side_effect_and_outcome_reports_unknown(make_harness: Any) -> None:
    h = await make_harness()
    first = h.start_executor("executor-a", fault="pause_after_side_effect=60")
    inc = "inc-crash"
    await h.open_incident(inc)
    key = await h.issue(inc, DrainWorkerPool(pool="cache-invalidation", region="us-east"))
    await h.wait_for(inc, has("StepStarted", key), what="StepStarted", procs=(first,))

    async def side_effect_done() -> bool:
        return (await h.side_effects()).get(key) == 1

    await _until(side_effect_done, "the side effect at the simulator")
    first.kill()  # SIGKILL after the side effect, before its outcome is appended
    events = await h.events(inc, key)
    assert not of_type(events, "StepSucceeded") and not of_type(events, "StepFailed")

    second = h.start_executor("executor-b")
    events = await h.wait_for(
        inc, has("StepOutcomeUnknown", key), what="StepOutcomeUnknown", procs=(second,), timeout=90
    )
    mine = [e for e in events if e.correlation_id == key]
    assert len(of_type(mine, "StepStarted")) == 1
    assert len(of_type(mine, "DirectiveAccepted")) == 1
    assert not of_type(mine, "StepSucceeded") and not of_type(mine, "StepFailed")
    unknown = of_type(mine, "StepOutcomeUnknown")
    assert len(unknown) == 1 and isinstance(unknown[0], ev.StepOutcomeUnknown)
    # The recovery re-gathered state: the pool is observed drained, not re-drained.
    pools = unknown[0].payload.observation.pools
    assert [(p.pool, p.region, p.desired_replicas) for p in pools] == [
        ("cache-invalidation", "us-east", 0)
    ]
    assert (await h.side_effects()).get(key) == 1
    assert await h.claim_status(key) == "unknown"
    assert (await h.state(inc)).directives[key].status is DirectiveStatus.OUTCOME_UNKNOWN


async def test_rebalance_mid_run_executes_nothing_twice_and_loses_nothing(
    make_harness: Any,
) -> None:
    h = await make_harness()
    slow = h.start_executor("executor-slow", fault="pause_after_side_effect=3")
    fast = h.start_executor("executor-fast")
    actions = [
        DrainWorkerPool(pool="cache-invalidation", region="us-east"),
        DrainWorkerPool(pool="cache-invalidation", region="eu-west"),
        DrainWorkerPool(pool="checkout-workers", region="us-east"),
        DrainWorkerPool(pool="checkout-workers", region="eu-west"),
        RestartDependencyTier(tier="pricing-cache", region="us-east"),
        RestartDependencyTier(tier="pricing-cache", region="eu-west"),
        RestartDependencyTier(tier="inventory-api", region="us-east"),
        RestartDependencyTier(tier="inventory-api", region="eu-west"),
        DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="us-east"),
        DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west"),
    ]
    keys: dict[str, str] = {}
    for i, action in enumerate(actions):
        inc = f"inc-rb-{i}"
        await h.open_incident(inc)
        keys[inc] = await h.issue(inc, action)
    # Wait until the slow executor has a step in flight (started, no outcome yet), then
    # crash it mid-step: its partitions move (a rebalance) while that step is open.
    in_flight: list[str] = []

    async def slow_step_in_flight() -> bool:
        everything = await h.read()
        for inc, key in keys.items():
            evs = [e for e in everything if e.incident_id == inc and e.correlation_id == key]
            mine = [
                e
                for e in of_type(evs, "StepStarted")
                if isinstance(e, ev.StepStarted)
                and e.payload.executor_id.startswith("executor-slow-")
            ]
            if mine and not _finished(evs, key):
                in_flight[:] = [inc]
                return True
        return False

    await _until(slow_step_in_flight, "a step of executor-slow in flight", timeout=60)
    slow.kill()
    third = h.start_executor("executor-late")  # and a join: another rebalance
    for inc, key in keys.items():
        await h.wait_for(
            inc,
            lambda evs, key=key: _finished(evs, key),
            what=f"an outcome for {inc}",
            procs=(fast, third),
            timeout=120,
        )
    effects = await h.side_effects()
    outcomes: dict[str, int] = {}
    for inc, key in keys.items():
        evs = await h.events(inc, key)
        assert len(of_type(evs, "StepStarted")) <= 1, inc
        assert effects.get(key, 0) <= 1, inc
        status = (await h.state(inc)).directives[key].status
        assert status in (
            DirectiveStatus.SUCCEEDED,
            DirectiveStatus.FAILED,
            DirectiveStatus.OUTCOME_UNKNOWN,
            DirectiveStatus.REFUSED,
        ), (inc, status)
        outcomes[status.value] = outcomes.get(status.value, 0) + 1
        assert len(of_type(evs, "StepSucceeded")) + len(of_type(evs, "StepFailed")) <= 1, inc
        succeeded = of_type(evs, "StepSucceeded")
        if succeeded and isinstance(succeeded[0], ev.StepSucceeded):
            assert succeeded[0].payload.result.changed and effects.get(key) == 1, inc
        assert decided(key)(evs), inc
    # The step that was in flight when its executor died is never re-run and never lost:
    # if its side effect landed it is an unknown outcome (exactly one effect); if the
    # crash came before the gate, it is failed as never started (no effect); after the
    # gate but before the call it may have landed: unknown. Never succeeded or refused.
    (inc,) = in_flight
    key = keys[inc]
    record = (await h.state(inc)).directives[key]
    if effects.get(key, 0) == 1:
        assert record.status is DirectiveStatus.OUTCOME_UNKNOWN, (inc, record.status)
    else:  # died before the gate (never started) or between the gate and the call
        assert (
            record.status is DirectiveStatus.FAILED and record.not_started
        ) or record.status is DirectiveStatus.OUTCOME_UNKNOWN, (inc, record)
    print("outcomes after the rebalance:", outcomes)


async def _count_started(h: Any, keys: dict[str, str]) -> bool:
    started = 0
    for inc, key in keys.items():
        if of_type(await h.events(inc, key), "StepStarted"):
            started += 1
    return started >= 2


def _finished(events: list[Any], key: str) -> bool:
    mine = [e for e in events if e.correlation_id == key]
    if of_type(mine, "DirectiveRefused"):
        return True
    return any(e.event_type in ("StepSucceeded", "StepFailed", "StepOutcomeUnknown") for e in mine)
