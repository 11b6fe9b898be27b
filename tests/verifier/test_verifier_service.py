"""The verifier process end to end: real Kafka, the simulator process, real side
effects through the adapters, and the verdict each simulator scenario should give.

The events an executor would append are written straight to Kafka; the side
effect itself is performed on the simulator through the adapters, so the
simulated platform really changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fixtures_services import Proc
from kafka_support import LedgerWriter
from verifier_support import (
    ALICE,
    Bridge,
    adapters_for,
    incident_state,
    read_log,
    wait_for_snapshots,
)

from conn_core.rules import Refused, decide
from conn_core.state import ControlState
from conn_runtime.settings import Topics
from conn_schemas import events as ev
from conn_schemas.values import (
    DisableFlagRule,
    DrainWorkerPool,
    HoldReason,
    RefusalReason,
    Verdict,
    Verify,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SPEED = 120.0  # simulated seconds per real second: recovery shows within the settle window


def disable(region: str) -> DisableFlagRule:
    return DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region=region)


async def one_step(
    scenario: str,
    region: str,
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
    *,
    after_sim_seconds: float = 0.0,
) -> tuple[Bridge, ev.VerificationSnapshot, Proc]:
    sim = simulator(scenario, speed=SPEED)
    verifier(sim.url)
    await _wait_sim_time(sim, after_sim_seconds)
    adapters = adapters_for(sim.url)
    try:
        bridge = await Bridge(producer, runbook).open()
        cid = await bridge.execute(disable(region), adapters)
    finally:
        await adapters.aclose()
    (snap,) = await wait_for_snapshots(kafka_bootstrap, conn_topics, {cid})
    assert snap.payload.trigger == "step" and snap.payload.step_correlation_id == cid
    assert {r.region for r in snap.payload.regions} == {"us-east", "eu-west"}
    assert snap.payload.criteria.settle_seconds == 2, "criteria from the declared runbook"
    return bridge, snap, sim


async def test_full_recovery_after_two_steps_and_a_resume(
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
) -> None:
    bridge, first, sim = await one_step(
        "full_recovery",
        "us-east",
        simulator,
        verifier,
        producer,
        runbook,
        kafka_bootstrap,
        conn_topics,
    )
    assert first.payload.verdict is Verdict.MIXED, first.payload.detail
    state = await incident_state(kafka_bootstrap, conn_topics, bridge.incident_id)
    assert state.hold is not None and state.hold.reason is HoldReason.VERIFICATION

    await bridge.resume()
    adapters = adapters_for(sim.url)
    try:
        second = await bridge.execute(disable("eu-west"), adapters)
    finally:
        await adapters.aclose()
    (snap,) = await wait_for_snapshots(kafka_bootstrap, conn_topics, {second})
    assert snap.payload.verdict is Verdict.RECOVERED, snap.payload.detail
    assert all(r.fresh and r.healthy and len(r.readings) == 3 for r in snap.payload.regions)
    assert snap.payload.control_plane[0].matches
    state = await incident_state(kafka_bootstrap, conn_topics, bridge.incident_id)
    assert state.hold is None and state.open_step is None
    assert state.directives[second].verified


async def test_one_region_recovering_is_mixed(
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
) -> None:
    _, snap, _ = await one_step(
        "partial_mixed",
        "eu-west",
        simulator,
        verifier,
        producer,
        runbook,
        kafka_bootstrap,
        conn_topics,
    )
    assert snap.payload.verdict is Verdict.MIXED, snap.payload.detail
    by_region = {r.region: r for r in snap.payload.regions}
    assert by_region["eu-west"].healthy and not by_region["us-east"].healthy


async def test_flag_back_on_after_disable_is_a_conflict_and_nothing_is_changed(
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
) -> None:
    _, snap, sim = await one_step(
        "flag_conflict",
        "eu-west",
        simulator,
        verifier,
        producer,
        runbook,
        kafka_bootstrap,
        conn_topics,
    )
    assert snap.payload.verdict is Verdict.CONFLICT, snap.payload.detail
    (check,) = snap.payload.control_plane
    assert check.expected == "disabled" and check.observed == "enabled" and not check.matches
    # Verification never changes a target: the only side effect is the step's own.
    step_cid = snap.correlation_id
    async with httpx.AsyncClient() as client:
        effects = (await client.get(sim.url + "/sim/side-effects")).json()
    assert set(effects) == {step_cid}, effects
    assert effects[step_cid] == 1


async def test_frozen_metrics_are_stale(
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
) -> None:
    # frozen_metrics stops recomputing after 120 simulated seconds: act after that,
    # as told by the simulator's clock (no sleeping on a guess).
    _, snap, _ = await one_step(
        "frozen_metrics",
        "eu-west",
        simulator,
        verifier,
        producer,
        runbook,
        kafka_bootstrap,
        conn_topics,
        after_sim_seconds=122,
    )
    assert snap.payload.verdict is Verdict.STALE_METRICS, snap.payload.detail
    assert not any(r.fresh for r in snap.payload.regions)


async def test_no_improvement_is_not_recovered_and_the_next_step_is_refused(
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
) -> None:
    bridge, snap, _ = await one_step(
        "no_improvement",
        "eu-west",
        simulator,
        verifier,
        producer,
        runbook,
        kafka_bootstrap,
        conn_topics,
    )
    assert snap.payload.verdict is Verdict.NOT_RECOVERED, snap.payload.detail
    assert snap.payload.control_plane[0].matches, "the rule is off; the metrics did not move"
    state = await incident_state(kafka_bootstrap, conn_topics, bridge.incident_id)
    assert state.hold is not None and state.hold.reason is HoldReason.VERIFICATION
    drain = DrainWorkerPool(pool="cache-invalidation", region="us-east")
    decision = decide(
        state,
        ev.DirectiveIssuedPayload(action=drain, based_on_sequence=state.sequence),
        ALICE,
        ControlState(),
    )
    assert isinstance(decision, Refused) and decision.reason is RefusalReason.ON_HOLD


async def test_crash_mid_verification_resumes_from_the_log_and_verifies_once(
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
) -> None:
    sim = simulator("partial_mixed", speed=SPEED)
    first = verifier(sim.url, name="verifier-1")
    adapters = adapters_for(sim.url)
    try:
        bridge = await Bridge(producer, runbook).open()
        cid = await bridge.execute(disable("eu-west"), adapters)
    finally:
        await adapters.aclose()
    await _wait_metric(first, "conn_verifier_in_flight 1.0")
    first.kill()  # SIGKILL during the settle window: nothing appended
    assert not [
        e
        for e in await read_log(kafka_bootstrap, conn_topics)
        if isinstance(e, ev.VerificationSnapshot)
    ]

    second = verifier(sim.url, name="verifier-2")
    (snap,) = await wait_for_snapshots(kafka_bootstrap, conn_topics, {cid})
    assert snap.payload.verdict is Verdict.MIXED
    second.stop()

    # A third instance re-reads a log that already has the snapshot: it must not verify
    # again. A verify directive proves it has caught up (its own snapshot needs a settle
    # window more than a duplicate of the old step would).
    verifier(sim.url, name="verifier-3")
    await bridge.resume()
    verify_cid = await bridge.direct(Verify(), consequential=False)
    (vsnap,) = await wait_for_snapshots(kafka_bootstrap, conn_topics, {verify_cid})
    assert vsnap.payload.trigger == "directive" and vsnap.payload.step_correlation_id == cid
    snaps = [
        e
        for e in await read_log(kafka_bootstrap, conn_topics)
        if isinstance(e, ev.VerificationSnapshot)
    ]
    assert sorted(s.correlation_id or "" for s in snaps) == sorted([cid, verify_cid])


async def _wait_sim_time(sim: Proc, t: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while (await client.get(sim.url + "/sim/state")).json()["t"] < t:
            if time.monotonic() > deadline:
                raise AssertionError(f"simulator did not reach t={t}")
            await asyncio.sleep(0.1)


async def _wait_metric(proc: Proc, line: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            text = (await client.get(proc.url + "/metrics")).text
            if line in text:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{line!r} not in {proc.name} metrics after {timeout}s")
