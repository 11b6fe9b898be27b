"""The two-person rule at the real executor (DESIGN.md invariant 11), driven straight
over Kafka as the directive-api would write it:

- the approval window is checked again at the moment of acting, not only by the
  executor's expiry sweep (which cancels only directives still waiting): a quorum
  reached in time whose step reaches its gate after the window closed never acts;
- an approval written onto the topic by a principal not entitled to approvals (a
  forgery with a real key of another service) is dead-lettered and does not complete
  the quorum; the genuine approval afterwards does.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from executor_harness import ALICE, DANA, DRIVER, RUNBOOK, has, of_type

from conn_core import approvals
from conn_runtime.kafka import event_headers
from conn_schemas import events as ev
from conn_schemas.codec import encode
from conn_schemas.values import (
    Actor,
    DrainWorkerPool,
    GatherState,
    Role,
    UpdateIncidentRecord,
)

pytestmark = pytest.mark.integration

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
ERIN = Actor(kind="human", id="erin", roles=(Role.SPECIALIST,), team="database-platform")


def rule(count: int, expires_after: int) -> bytes:
    """The shipped runbook with one more approval rule (a narrowing: its own rules kept)."""
    text = RUNBOOK.read_text()
    assert "\napprovals:\n" in text
    extra = (
        "approvals:\n"
        "  - action: drain_worker_pool\n"
        "    targets: [cache-invalidation]\n"
        f"    count: {count}\n"
        "    roles: [specialist]\n"
        f"    expires_after: {expires_after}\n"
    )
    return text.replace("\napprovals:\n", "\n" + extra, 1).encode()


def approval(inc: str, cid: str, who: Actor, sha: str, issued: ev.Envelope) -> ev.ApprovalRecorded:
    """What the directive-api writes for `who` (stamped one second after the directive,
    so the vote is inside any window whatever the machine's speed)."""
    event = ev.new_event(
        ev.ApprovalRecorded,
        incident_id=inc,
        payload=ev.ApprovalRecordedPayload(packet_sha256=sha, detail="checked"),
        actor=who,
        producer=DRIVER,
        correlation_id=cid,
    )
    return event.model_copy(update={"occurred_at": issued.occurred_at + timedelta(seconds=1)})


async def pending(h: Any, inc: str, cid: str) -> tuple[str, ev.Envelope]:
    """The directive's current decision-packet hash, and the directive as written."""
    state = await h.state(inc)
    assert cid in approvals.awaiting(state), "the directive should wait for approvers"
    sha = approvals.current_sha256(state, cid)
    assert sha is not None
    (issued,) = of_type(await h.events(inc, cid), "DirectiveIssued", cid)
    return sha, issued


async def test_a_quorum_reached_in_time_does_not_act_after_its_window_closed(
    make_harness: Any,
) -> None:
    h = await make_harness()
    # The step pauses after StepStarted for longer than the whole approval window: the
    # re-check at the gate must see the window closed (the sweep only cancels directives
    # still waiting for approvers, and this one has its quorum).
    proc = h.start_executor(fault="pause_before_side_effect=6")
    inc = "inc-approval-window"
    await h.open_incident(inc)
    await h.declare(inc, rule(count=1, expires_after=3))
    cid = await h.issue(inc, DRAIN)
    sha, issued = await pending(h, inc, cid)
    await h.append(approval(inc, cid, DANA, sha, issued))

    def finished(events: list[ev.Envelope]) -> bool:
        return bool(
            of_type(events, "StepFailed", cid)
            or of_type(events, "DirectiveRefused", cid)
            or of_type(events, "StepSucceeded", cid)
        )

    events = await h.wait_for(inc, finished, what="the approved step's outcome", procs=(proc,))
    assert not of_type(events, "StepSucceeded", cid), "acted after its approval window"
    state = await h.state(inc)
    assert state.approvals[cid].quorum, "the approval was in time and counted"
    failed = of_type(events, "StepFailed", cid)
    refused = of_type(events, "DirectiveRefused", cid)
    if failed:  # the usual path: stopped at the gate, after StepStarted
        payload = failed[0].payload
        assert isinstance(payload, ev.StepFailedPayload)
        assert "approval window closed" in payload.error, payload.error
    else:  # a slow machine: refused before accepting, for the same reason
        payload_r = refused[0].payload
        assert isinstance(payload_r, ev.DirectiveRefusedPayload)
        assert payload_r.reason.value == "approval_expired", payload_r
    assert cid not in await h.side_effects()


async def _dead_letter_of(h: Any, offset: int, partition: int, timeout: float = 60) -> set[str]:
    """(consumer, reason) pairs conn.deadletter holds for one record of conn.events."""
    consumer = AIOKafkaConsumer(
        h.topics.deadletter,
        bootstrap_servers=h.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **h.trust.kafka_options("sre"),
    )
    await consumer.start()
    found: set[str] = set()
    try:
        deadline = time.monotonic() + timeout
        while not any(f.startswith("executor") for f in found):
            assert time.monotonic() < deadline, f"not dead-lettered by the executor: {found}"
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    hd = {k: v.decode() for k, v in r.headers}
                    if (
                        hd.get("dlq.source.topic") == h.topics.events
                        and hd.get("dlq.source.partition") == str(partition)
                        and hd.get("dlq.source.offset") == str(offset)
                    ):
                        found.add(f"{hd['dlq.consumer']}:{hd['dlq.reason']}")
    finally:
        await consumer.stop()
    return found


async def test_a_forged_approval_is_dead_lettered_and_does_not_complete_the_quorum(
    make_harness: Any,
) -> None:
    h = await make_harness()
    proc = h.start_executor()
    inc = "inc-forged-approval"
    await h.open_incident(inc)
    await h.declare(inc, rule(count=2, expires_after=900))
    cid = await h.issue(inc, DRAIN)
    sha, issued = await pending(h, inc, cid)
    await h.append(approval(inc, cid, DANA, sha, issued))

    # erin's approval of the exact packet, but written and signed by the verifier (a real
    # principal with a real key, not entitled to approvals): it would complete the quorum.
    forged = approval(inc, cid, ERIN, sha, issued).model_copy(update={"producer": "verifier"})
    value = encode(forged)
    producer = AIOKafkaProducer(
        bootstrap_servers=h.bootstrap, acks="all", **h.trust.kafka_options("verifier")
    )
    await producer.start()
    try:
        md = await producer.send_and_wait(
            h.topics.events,
            value,
            key=inc.encode(),
            headers=[*event_headers(forged), *h.trust.keys.headers(value, "verifier")],
        )
    finally:
        await producer.stop()

    # A note after it on the same partition: once it is recorded, the executor has read
    # past the forgery (in order) -- and not acted on it.
    note = await h.issue(inc, UpdateIncidentRecord(note="waiting for a second approver"))
    await h.wait_for(inc, has("IncidentRecordUpdated", note), what="the note", procs=(proc,))
    mine = await h.events(inc, cid)
    assert [e.event_type for e in mine] == ["DirectiveIssued", "ApprovalRecorded"], mine
    assert mine[1].actor.id == "dana"
    assert cid not in await h.side_effects()
    assert (await h.state(inc)).approvals[cid].approvers == ["dana"]
    reasons = await _dead_letter_of(h, md.offset, md.partition)
    # (the verifier may not sign approvals, nor write as a human: either reason stops it)
    assert reasons & {"executor:not_entitled", "executor:actor_not_allowed"}, reasons

    # The genuine second approval runs it: the forgery was the only thing missing.
    await h.append(approval(inc, cid, ERIN, sha, issued))
    events = await h.wait_for(
        inc, has("StepSucceeded", cid), what="the approved step", procs=(proc,)
    )
    approvers = [e.actor.id for e in of_type(events, "ApprovalRecorded", cid)]
    assert approvers == ["dana", "erin"]
    assert (await h.side_effects()).get(cid) == 1
    assert issued.actor.id == ALICE.id  # the issuer never approved it


async def test_a_takeover_or_a_newer_state_change_cancels_a_waiting_directive(
    make_harness: Any,
) -> None:
    """Recorded by the executor (DirectiveRefused), with no side effect, even though an
    approval had already been given; a later approval changes nothing."""
    h = await make_harness()
    proc = h.start_executor()
    cases = {"inc-wait-takeover": "takeover", "inc-wait-gather": "gather"}
    waiting: dict[str, tuple[str, str, ev.Envelope]] = {}
    for inc in cases:
        await h.open_incident(inc)
        await h.declare(inc, rule(count=2, expires_after=900))
        cid = await h.issue(inc, DRAIN)
        sha, issued = await pending(h, inc, cid)
        await h.append(approval(inc, cid, DANA, sha, issued))
        waiting[inc] = (cid, sha, issued)
    await h.take_over("inc-wait-takeover")
    await h.issue("inc-wait-gather", GatherState(regions=("us-east",)))
    for inc, (cid, sha, issued) in waiting.items():
        events = await h.wait_for(
            inc, has("DirectiveRefused", cid), what=f"{cases[inc]} cancels", procs=(proc,)
        )
        (refused,) = of_type(events, "DirectiveRefused", cid)
        assert isinstance(refused.payload, ev.DirectiveRefusedPayload)
        assert refused.payload.refused_by == "executor"
        assert refused.payload.reason.value == "stale_base_position", refused.payload
        assert "cancelled while waiting for approval" in refused.payload.detail
        assert not of_type(events, "StepStarted", cid)
        await h.append(approval(inc, cid, ERIN, sha, issued))  # too late: nothing happens
    note = await h.issue("inc-wait-gather", UpdateIncidentRecord(note="after"))
    await h.wait_for(
        "inc-wait-gather", has("IncidentRecordUpdated", note), what="the note", procs=(proc,)
    )
    effects = await h.side_effects()
    assert all(cid not in effects for cid, _, _ in waiting.values())
