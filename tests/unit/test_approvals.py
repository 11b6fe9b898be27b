"""The two-person rule as pure logic (DESIGN.md invariant 11): oracles from the
design, not the code — distinct entitled approvers who are not the issuer, the exact
decision packet, before expiry; any decline, hold, kill switch, takeover or newer
state change stops it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from builders import ALICE, CAROL, DANA, MALLORY, OLIVE, RUNBOOK, T0, History
from hypothesis import given, settings
from hypothesis import strategies as st

from conn_core import approvals
from conn_core.authority import parse_authority, widenings
from conn_core.bridge import region_health
from conn_core.fold import evolve_control, fold
from conn_core.rules import recheck
from conn_core.state import ControlState, IncidentState
from conn_schemas import events as ev
from conn_schemas.approvals import RegionEvidence
from conn_schemas.observations import MetricsReading, Observation
from conn_schemas.values import Actor, DrainWorkerPool, RefusalReason, Role, Verdict

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
NO_CONTROL = ControlState()
ERIN = Actor(kind="human", id="erin", roles=(Role.SPECIALIST,), team="database-platform")

RULE = b"""
approvals:
  - action: drain_worker_pool
    targets: [cache-invalidation]
    count: 2
    roles: [commander, specialist]
    self_approval: false
    expires_after: 60
"""


def runbook(rule: bytes = RULE) -> bytes:
    return RUNBOOK.read_bytes() + rule


def history(rule: bytes = RULE) -> tuple[History, str]:
    h = History().open().declare(content=runbook(rule))
    cid = h.direct(DRAIN, actor=ALICE)
    return h, cid


def state_of(h: History) -> IncidentState:
    return fold(h.events, h.incident_id)


def vote(
    h: History,
    cid: str,
    actor: Actor,
    *,
    approve: bool = True,
    sha: str | None = None,
    late: timedelta | None = None,
) -> ev.Envelope:
    sha = sha or approvals.current_sha256(state_of(h), cid) or "0" * 64
    if approve:
        return h._add(
            ev.ApprovalRecorded, ev.ApprovalRecordedPayload(packet_sha256=sha), actor, cid
        )
    return h._add(
        ev.ApprovalDeclined, ev.ApprovalDeclinedPayload(packet_sha256=sha, reason="no"), actor, cid
    )


def gate(h: History, cid: str) -> RefusalReason | None:
    refusal = approvals.gate(state_of(h), cid)
    return refusal.reason if refusal else None


def test_needs_approval_only_where_the_authority_says() -> None:
    h, cid = history()
    state = state_of(h)
    assert cid in approvals.awaiting(state)
    assert gate(h, cid) is RefusalReason.APPROVAL_REQUIRED
    other = h.direct(DrainWorkerPool(pool="checkout-workers", region="us-east"))
    assert other not in state_of(h).approvals
    assert gate(h, other) is None
    # The shipped runbook: orders-db restarts need a database-platform approver.
    authority, _ = parse_authority(RUNBOOK.read_bytes())
    rule = approvals.rule_for(authority, _restart("orders-db"))
    assert rule is not None and rule.teams == ("database-platform",)
    assert approvals.rule_for(authority, _restart("pricing-cache")) is None


def _restart(tier: str):  # type: ignore[no-untyped-def]
    from conn_schemas.values import RestartDependencyTier

    return RestartDependencyTier(tier=tier, region="eu-west")


def test_quorum_of_distinct_people() -> None:
    h, cid = history()
    vote(h, cid, CAROL)
    assert gate(h, cid) is RefusalReason.APPROVAL_REQUIRED
    vote(h, cid, DANA)
    assert gate(h, cid) is None
    state = state_of(h)
    assert state.approvals[cid].approvers == ["carol", "dana"]
    assert cid not in approvals.awaiting(state)
    assert recheck(state, cid, NO_CONTROL) is None


def test_the_issuer_cannot_approve_their_own_directive() -> None:
    h, cid = history()
    refusal = approvals.check_vote(
        state_of(h),
        ev.new_event(
            ev.ApprovalRecorded,
            incident_id=h.incident_id,
            payload=ev.ApprovalRecordedPayload(
                packet_sha256=approvals.current_sha256(state_of(h), cid) or ""
            ),
            actor=ALICE,
            producer="test",
            correlation_id=cid,
            clock=lambda: T0 + timedelta(seconds=len(h.events)),  # within the window
        ),
    )
    # Its own code (it was refused as not_conn_holder; and without the clock above this
    # test passed on an expired window, not on the rule it names).
    assert refusal is not None and refusal.reason is RefusalReason.SELF_APPROVAL, refusal
    assert "a second person must approve it" in refusal.detail
    vote(h, cid, ALICE)  # forged onto the topic anyway: folded as nothing
    vote(h, cid, CAROL)
    assert state_of(h).approvals[cid].approvers == ["carol"]
    assert gate(h, cid) is RefusalReason.APPROVAL_REQUIRED


def test_self_approval_when_the_rule_allows_it_still_counts_once() -> None:
    h, cid = history(RULE.replace(b"self_approval: false", b"self_approval: true"))
    vote(h, cid, ALICE)
    vote(h, cid, ALICE)
    assert state_of(h).approvals[cid].approvers == ["alice"]
    assert gate(h, cid) is RefusalReason.APPROVAL_REQUIRED


def test_a_second_approval_by_the_same_person_does_not_count() -> None:
    h, cid = history()
    vote(h, cid, CAROL)
    vote(h, cid, CAROL)
    assert state_of(h).approvals[cid].approvers == ["carol"]
    assert gate(h, cid) is RefusalReason.APPROVAL_REQUIRED


def test_one_decline_blocks() -> None:
    h, cid = history()
    vote(h, cid, CAROL)
    vote(h, cid, MALLORY, approve=False)
    vote(h, cid, DANA)  # too late: declined
    state = state_of(h)
    assert state.approvals[cid].declined_by == "mallory"
    assert state.approvals[cid].approvers == ["carol"]
    assert gate(h, cid) is RefusalReason.APPROVAL_DECLINED
    assert approvals.status(state, cid, T0) == "declined"


def test_unentitled_approvers_do_not_count() -> None:
    h, cid = history(RULE.replace(b"roles: [commander, specialist]", b"teams: [database-platform]"))
    vote(h, cid, OLIVE)  # observer, no team
    vote(h, cid, CAROL)  # commander of another team
    vote(h, cid, DANA)
    assert state_of(h).approvals[cid].approvers == ["dana"]
    vote(h, cid, ERIN)
    assert gate(h, cid) is None
    service = Actor.service("packager")
    assert approvals.entitled(state_of(h).approvals[cid].rule, service) is False


def test_expiry() -> None:
    h, cid = history(RULE.replace(b"expires_after: 60", b"expires_after: 3"))
    vote(h, cid, CAROL)
    for _ in range(4):
        h.alert()  # time passes (one second per record), nothing changes
    vote(h, cid, DANA)  # after the window: does not count
    state = state_of(h)
    assert state.approvals[cid].approvers == ["carol"]
    assert approvals.status(state, cid, T0 + timedelta(hours=1)) == "expired"
    # A quorum reached in time still stops at the window's end (the executor's clock).
    h2, cid2 = history()
    vote(h2, cid2, CAROL)
    vote(h2, cid2, DANA)
    s2 = state_of(h2)
    assert approvals.gate(s2, cid2, T0 + timedelta(seconds=10)) is None
    late = approvals.gate(s2, cid2, T0 + timedelta(minutes=5))
    assert late is not None and late.reason is RefusalReason.APPROVAL_EXPIRED


@pytest.mark.parametrize("stop", ["hold", "takeover", "state_change", "kill_switch"])
def test_a_stop_or_a_newer_state_change_cancels_a_pending_directive(stop: str) -> None:
    h, cid = history()
    vote(h, cid, CAROL)
    control = ControlState()
    if stop == "hold":
        h.hold()
    elif stop == "takeover":
        h.request_takeover()
    elif stop == "state_change":
        h.gather(None, purpose="directed")
    else:
        evolve_control(control, h.kill_switch())
    vote(h, cid, DANA)  # even a quorum after it does not make it runnable
    state = state_of(h)
    refusal = recheck(state, cid, control) or approvals.gate(state, cid)
    assert refusal is not None
    expected = {
        "hold": RefusalReason.ON_HOLD,
        "takeover": RefusalReason.STALE_BASE,
        "state_change": RefusalReason.STALE_BASE,
        "kill_switch": RefusalReason.KILL_SWITCH,
    }[stop]
    if stop == "kill_switch":
        assert refusal.reason is expected
    else:
        # The approval naming the old packet is refused, and the step itself would be.
        assert recheck(state, cid, control) is not None
        assert recheck(state, cid, control).reason is expected  # type: ignore[union-attr]


def test_an_approval_naming_a_stale_packet_is_refused() -> None:
    h, cid = history()
    old = approvals.current_sha256(state_of(h), cid)
    h.alert()  # packet-neutral for the decision: same hash
    assert approvals.current_sha256(state_of(h), cid) == old
    vote(h, cid, CAROL)  # approvals do not change the packet either
    assert approvals.current_sha256(state_of(h), cid) == old
    h.gather(None, purpose="directed")  # new evidence: a new packet
    new = approvals.current_sha256(state_of(h), cid)
    assert new != old
    vote(h, cid, DANA, sha=old)
    assert state_of(h).approvals[cid].approvers == ["carol"]
    vote(h, cid, DANA, sha="f" * 64)
    assert state_of(h).approvals[cid].approvers == ["carol"]


def test_the_decision_packet_says_what_will_run() -> None:
    h, cid = history()
    packet = approvals.decision_packet(state_of(h), cid)
    assert packet is not None
    assert packet.action == DRAIN and packet.issued_by == "alice"
    assert packet.rule.count == 2
    # The approver sees the undo the executor will record (issue 19 item 2).
    assert packet.undo is not None and "cache-invalidation" in packet.undo
    assert "scaled back" in packet.undo
    assert packet.verification.max_queue_depth == 200
    assert any("holds the conn" in p for p in packet.preconditions)
    assert {e.region for e in packet.evidence} == {"us-east", "eu-west"}
    assert packet.expires_at == packet.issued_at + timedelta(seconds=60)


def test_the_evidence_is_the_latest_of_each_region_as_the_bridge_shows_it() -> None:
    """Per region of the authority, in its order: the latest reading (a newer gather
    replaces the snapshot's) and the region's part of the latest verification; a region
    nothing was read of has no evidence. The same figures as the bridge's health."""
    h, cid = history()
    h.snapshot("d-earlier", Verdict.MIXED, regions=("us-east",))  # judged unhealthy
    newer = T0 + timedelta(hours=1)
    reading = MetricsReading(
        region="us-east", error_rate=0.25, queue_depth=40, request_rate=9, observed_at=newer
    )
    h.gather(None, purpose="directed", observation=Observation(metrics=(reading,)))
    state = state_of(h)
    packet = approvals.decision_packet(state, cid)
    assert packet is not None and state.authority is not None
    assert [e.region for e in packet.evidence] == list(state.authority.regions)
    evidence = {e.region: e for e in packet.evidence}
    assert evidence["us-east"] == RegionEvidence(
        region="us-east", error_rate=0.25, queue_depth=40, observed_at=newer, verdict_healthy=False
    )
    assert evidence["eu-west"] == RegionEvidence(region="eu-west")
    assert state.last_event_at is not None
    shown = {r.region: r for r in region_health(state, state.last_event_at)}
    for e in packet.evidence:
        bridge = shown[e.region]
        assert (e.error_rate, e.queue_depth, e.observed_at, e.verdict_healthy) == (
            bridge.error_rate,
            bridge.queue_depth,
            bridge.observed_at,
            bridge.healthy,
        )


def test_relaxing_the_two_person_rule_is_a_widening() -> None:
    strict, _ = parse_authority(runbook())
    looser, _ = parse_authority(runbook(RULE.replace(b"count: 2", b"count: 1")))
    anyone, _ = parse_authority(runbook(RULE.replace(b"    roles: [commander, specialist]\n", b"")))
    assert any("lowered" in w for w in widenings(strict, looser))
    assert widenings(looser, strict) == []  # stricter is a narrowing
    base, _ = parse_authority(RUNBOOK.read_bytes())
    assert any("no longer required" in w for w in widenings(base, _without_rules(base)))
    assert any("more people" in w for w in widenings(strict, anyone))


def _without_rules(authority):  # type: ignore[no-untyped-def]
    return authority.model_copy(update={"approvals": ()})


def test_the_takeover_packet_lists_pending_approvals() -> None:
    from conn_readmodel.packet import build_packet, render_markdown

    h, cid = history()
    vote(h, cid, CAROL)
    sha = approvals.current_sha256(state_of(h), cid)
    packet = build_packet(state_of(h), head_hash="h", trigger="hold", to_team=None, generated_at=T0)
    (waiting,) = packet.pending_approvals
    assert waiting.correlation_id == cid and waiting.approved_by == ("carol",)
    assert waiting.required == 2 and waiting.decision_packet_sha256 == sha
    assert sha is not None and sha in render_markdown(packet)
    vote(h, cid, DANA)  # quorum: no longer waiting for anyone
    after = build_packet(state_of(h), head_hash="h", trigger="hold", to_team=None, generated_at=T0)
    assert after.pending_approvals == ()


# --- the adversary: any sequence of votes ------------------------------------------------


VOTERS = {"alice": ALICE, "carol": CAROL, "mallory": MALLORY, "dana": DANA, "olive": OLIVE}
"""alice issues; carol, mallory (commanders) and dana (specialist) are entitled; olive is not."""


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(sorted(VOTERS)), st.booleans(), st.booleans()), max_size=8)
)
def test_any_vote_sequence_runs_only_with_a_quorum_and_no_decline(
    votes: list[tuple[str, bool, bool]],
) -> None:
    h, cid = history()
    sha = approvals.current_sha256(state_of(h), cid)
    for who, approve, right_hash in votes:
        vote(h, cid, VOTERS[who], approve=approve, sha=sha if right_hash else "e" * 64)
    entitled = {"carol", "mallory", "dana", "alice"}
    declined = any(not approve and who in entitled for who, approve, _ in votes)
    approvers = {
        who
        for who, approve, right in votes
        if approve and right and who in entitled and who != "alice"
    }
    # Oracle (DESIGN.md 11): 2 distinct entitled approvers who are not the issuer named the
    # exact packet, and nobody entitled declined (a decline after the quorum still blocks,
    # since the directive has not started).
    runs = not declined and len(approvers) >= 2
    assert (gate(h, cid) is None) == runs, (votes, gate(h, cid))


def test_an_approved_directive_keeps_the_packet_its_approvers_saw() -> None:
    h, cid = history()
    sha = approvals.current_sha256(state_of(h), cid)
    vote(h, cid, CAROL)
    vote(h, cid, DANA)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)  # the step changes the state, and so today's packet
    assert approvals.current_sha256(state_of(h), cid) != sha
    (item,) = approvals.pending(state_of(h), T0, include_done=True)
    assert item.status == "executed" and item.packet_sha256 == sha


def test_the_decision_packet_says_a_restart_cannot_be_undone() -> None:
    from conn_core.undo import planned_undo

    restart = _restart("orders-db")
    text = planned_undo(restart)
    assert text is not None and "cannot be undone" in text and "orders-db" in text
    assert planned_undo(DRAIN) is not None and "cannot" not in (planned_undo(DRAIN) or "")


# --- the exact packet: replays, and every record that could change it -------------------


def test_an_approval_replayed_from_another_directive_or_incident_does_not_count() -> None:
    h, cid = history()
    other = h.direct(DRAIN)  # the same action and target, another directive
    assert approvals.current_sha256(state_of(h), other) != approvals.current_sha256(
        state_of(h), cid
    )
    genuine = vote(h, other, CAROL)
    # carol's approval of the other directive, re-addressed to this one (a new record)
    h.events.append(genuine.model_copy(update={"event_id": uuid.uuid4(), "correlation_id": cid}))
    # ...and the very same record delivered twice
    h.events.append(genuine)
    state = state_of(h)
    assert state.approvals[cid].approvers == []
    assert state.approvals[other].approvers == ["carol"]
    # An approval from another incident (same directive id, same action) carried over.
    h2 = History("inc-2").open().declare(content=runbook())
    h2.direct(DRAIN, actor=ALICE, cid=cid)
    elsewhere = vote(h2, cid, DANA)
    assert approvals.current_sha256(state_of(h2), cid) != approvals.current_sha256(state_of(h), cid)
    h.events.append(
        elsewhere.model_copy(update={"event_id": uuid.uuid4(), "incident_id": h.incident_id})
    )
    assert state_of(h).approvals[cid].approvers == []
    assert gate(h, cid) is RefusalReason.APPROVAL_REQUIRED


RECORDS = (
    "alert",
    "note",
    "gather",
    "own_gather",
    "hold",
    "resume",
    "takeover",
    "redeclare",
    "other_directive",
    "carol",
    "dana",
)
"""Records that may land while a directive waits for approvers (`own_gather`: a record of
the directive itself, which never supersedes it)."""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(RECORDS), max_size=10))
def test_a_runnable_directive_runs_the_one_packet_its_quorum_approved(steps: list[str]) -> None:
    """Oracle (DESIGN.md 11, "approved the exact decision packet"): if the step may run,
    every approval that counted named one and the same packet, and it is today's packet
    unless only the directive's own records came after the first approval."""
    h, cid = history()
    own_after_first_vote = False
    for step in [*steps, "carol", "dana"]:  # the quorum is always asked for at the end
        if step == "alert":
            h.alert()
        elif step == "note":
            h.note()
        elif step == "gather":
            h.gather(None, purpose="directed")
        elif step == "own_gather":
            h.gather(cid, purpose="directed")
            own_after_first_vote = own_after_first_vote or bool(state_of(h).approvals[cid].votes)
        elif step == "hold":
            h.hold()
        elif step == "resume":
            h.resume()
        elif step == "takeover":
            h.request_takeover()
        elif step == "redeclare":
            h.declare(content=runbook())
        elif step == "other_directive":
            h.direct(DrainWorkerPool(pool="checkout-workers", region="us-east"))
        else:
            vote(h, cid, CAROL if step == "carol" else DANA)  # names today's packet
    state = state_of(h)
    if (recheck(state, cid, NO_CONTROL) or approvals.gate(state, cid)) is not None:
        return
    track = state.approvals[cid]
    named = {v.packet_sha256 for v in track.votes if v.decision == "approved" and v.counted}
    assert named == {track.approved_sha256}, steps
    if not own_after_first_vote:
        assert named == {approvals.current_sha256(state, cid)}, steps
