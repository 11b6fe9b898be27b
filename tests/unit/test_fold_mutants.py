"""The fold, pinned down where mutation testing found it thin (issue 15).

Oracles from DESIGN.md, not from the code:

- "The ledger is a pure fold over that order: replaying the topic from offset 0
  rebuilds it exactly" — every record takes a position; a record seen before (same
  event_id) changes nothing else;
- invariant 6: not recovered, conflicting, stale metrics or mixed regions ⇒ the fold
  derives HOLD; nothing executes until an explicit resume or an accepted takeover;
- invariant 3: the one-step gate opens only when the step is verified recovered (or
  never started);
- invariant 9: a new packet is due whenever its content would change; an older packet
  never replaces a newer one; the takeover moves the conn to the accepting specialist;
- invariant 7: the kill switch is global control, folded from `conn.control`.
"""

from __future__ import annotations

from builders import ALICE, EXECUTOR, RUNBOOK, History

from conn_core.fold import evolve, evolve_control, fold, fold_all
from conn_core.state import ControlState, DirectiveStatus, IncidentState
from conn_schemas import events as ev
from conn_schemas.observations import MetricsReading, Observation
from conn_schemas.values import (
    DisableFlagRule,
    DrainWorkerPool,
    HoldReason,
    RefusalReason,
    RestartDependencyTier,
    Verdict,
    Verify,
)

DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")


def declared() -> History:
    return History().open().declare()


def state_of(h: History) -> IncidentState:
    return fold(h.events, h.incident_id)


def started(h: History, action=DRAIN) -> str:  # type: ignore[no-untyped-def]
    cid = h.direct(action)
    h.accept(cid, action)
    h.start(cid, action)
    return cid


# --- replay and duplicates -------------------------------------------------------------


def test_a_replayed_record_takes_a_position_and_changes_nothing_else() -> None:
    h = declared()
    cid = started(h)
    h.succeed(cid, DRAIN)
    h.snapshot(cid, Verdict.NOT_RECOVERED)
    once = state_of(h)
    assert once.hold is not None and once.holds_declared == 1
    replayed = History(h.incident_id)
    replayed.events = [*h.events, h.events[-1], h.events[-2]]
    twice = state_of(replayed)
    assert twice.sequence == once.sequence + 2
    assert twice.duplicate_events == 2
    assert twice.holds_declared == 1, "a replayed failing snapshot does not hold again"
    assert twice.hold is not None and twice.hold.since_sequence == once.hold.since_sequence
    assert twice.directives[cid].status is DirectiveStatus.SUCCEEDED
    assert twice.conflicting_records == 0
    assert twice.state_changed_at == once.state_changed_at


def test_a_replayed_start_does_not_count_a_second_step() -> None:
    h = declared()
    started(h, RESTART)
    h.events.append(h.events[-1])
    state = state_of(h)
    assert state.consequential_steps == 1
    assert state.restarts == {("pricing-cache", "us-east"): 1}
    assert state.duplicate_events == 1


def test_every_record_moves_the_position_and_its_time() -> None:
    h = declared()
    h.alert()
    state = state_of(h)
    assert state.sequence == 3
    assert state.last_event_at == h.events[-1].occurred_at


def test_fold_reads_only_its_incident_and_fold_all_equals_fold_per_incident() -> None:
    a, b = declared(), History("inc-2").open().declare()
    started(a)
    b.hold()
    mixed = [e for pair in zip(a.events, b.events, strict=False) for e in pair]
    mixed += a.events[len(b.events) :]
    states = fold_all(mixed)
    assert set(states) == {"inc-1", "inc-2"}
    assert states["inc-1"] == fold(mixed, "inc-1") == state_of(a)
    assert states["inc-2"] == fold(mixed, "inc-2") == state_of(b)
    assert fold(mixed, "inc-3") == IncidentState(incident_id="inc-3")


def test_evolve_applies_one_record_in_place() -> None:
    h = declared()
    state = IncidentState(incident_id=h.incident_id)
    for event in h.events:
        assert evolve(state, event) is state
    assert state == state_of(h)


# --- opening and closing --------------------------------------------------------------


def test_a_second_open_does_not_reopen_or_rename() -> None:
    h = declared()
    first = state_of(h)
    h._add(
        ev.IncidentOpened,
        ev.IncidentOpenedPayload(title="another title", service="other"),
        ALICE,
    )
    state = state_of(h)
    assert state.opened and state.title == first.title == "checkout failing"
    assert state.service == "checkout"
    assert state.opened_at == h.events[0].occurred_at
    assert state.state_changed_at == first.state_changed_at


def test_a_close_is_a_state_change() -> None:
    h = declared()
    h.close()
    state = state_of(h)
    assert state.closed and state.state_changed_at == state.sequence


# --- derived holds (invariant 6) -------------------------------------------------------


def test_every_verdict_but_recovered_derives_a_hold_naming_the_step() -> None:
    for verdict in Verdict:
        h = declared()
        cid = started(h)
        h.succeed(cid, DRAIN)
        h.snapshot(cid, verdict)
        state = state_of(h)
        assert state.last_verdict is verdict
        assert state.directives[cid].verdict is verdict
        assert cid in state.snapshot_correlations
        assert state.state_changed_at == state.sequence
        if verdict is Verdict.RECOVERED:
            assert state.hold is None and state.open_step is None
            assert state.directives[cid].verified
        else:
            assert state.hold is not None, verdict
            assert state.hold.reason is HoldReason.VERIFICATION
            assert state.hold.correlation_id == cid
            assert state.hold.since_sequence == state.sequence
            assert verdict.value in state.hold.detail
            assert state.open_step == cid, "an unverified step keeps the gate closed"
            assert state.holds_declared == 1


def test_a_recovered_snapshot_of_another_step_does_not_open_the_gate() -> None:
    h = declared()
    cid = started(h)
    h.snapshot("some-other-step", Verdict.RECOVERED)
    assert state_of(h).open_step == cid


def test_a_snapshot_remembers_each_regions_part_and_the_newest_reading() -> None:
    h = declared()
    cid = started(h)
    h.snapshot(cid, Verdict.RECOVERED, regions=("us-east", "eu-west"))
    state = state_of(h)
    assert set(state.last_verification) == {"us-east", "eu-west"}
    assert set(state.last_verification_at) == {"us-east", "eu-west"}
    assert set(state.last_readings) == {"us-east", "eu-west"}
    newest = state.last_readings["us-east"].observed_at
    # An older reading arriving later never replaces a newer one.
    old = MetricsReading(
        region="us-east",
        error_rate=0.5,
        queue_depth=9,
        request_rate=1,
        observed_at=newest.replace(year=2020),
    )
    h.gather(None, purpose="directed", observation=Observation(metrics=(old,)))
    assert state_of(h).last_readings["us-east"].observed_at == newest
    same_time = old.model_copy(update={"observed_at": newest, "error_rate": 0.25})
    h.gather(None, purpose="directed", observation=Observation(metrics=(same_time,)))
    assert state_of(h).last_readings["us-east"].error_rate == 0.25


def test_a_failed_step_holds_and_one_that_never_started_does_not() -> None:
    h = declared()
    cid = started(h)
    h.fail(cid, DRAIN)
    state = state_of(h)
    assert state.hold is not None and state.hold.reason is HoldReason.STEP_FAILED
    assert state.hold.correlation_id == cid and state.hold.detail == "boom"
    assert state.open_step == cid
    h2 = declared()
    cid2 = h2.direct(DRAIN)
    h2.accept(cid2, DRAIN)
    h2.fail_not_started(cid2, DRAIN)
    state2 = state_of(h2)
    assert state2.hold is None and state2.open_step is None
    assert state2.directives[cid2].not_started
    assert state2.directives[cid2].status is DirectiveStatus.FAILED


def test_a_failed_read_does_not_hold() -> None:
    h = declared()
    cid = h.direct(Verify())
    h.accept(cid, Verify(), consequential=False)
    h.fail(cid, Verify())
    assert state_of(h).hold is None


def test_a_conflict_or_partial_state_refusal_holds_with_that_reason_others_do_not() -> None:
    for refusal, hold in (
        (RefusalReason.EXPECTATION_CONFLICT, HoldReason.EXPECTATION_CONFLICT),
        (RefusalReason.PARTIAL_STATE, HoldReason.PARTIAL_STATE),
        (RefusalReason.STALE_BASE, None),
        (RefusalReason.KILL_SWITCH, None),
    ):
        h = declared()
        cid = h.direct(DRAIN)
        h.refuse(cid, DRAIN, refusal, detail="seen otherwise")
        state = state_of(h)
        record = state.directives[cid]
        assert record.status is DirectiveStatus.REFUSED and record.refusal is refusal
        assert record.refusal_detail == "seen otherwise"
        assert state.refusals == {refusal: 1}
        assert state.open_step is None, "a refused step is not open"
        if hold is None:
            assert state.hold is None, refusal
        else:
            assert state.hold is not None and state.hold.reason is hold
            assert state.hold.detail == "seen otherwise" and state.hold.correlation_id == cid
            assert state.state_changed_at == state.sequence


def test_a_refusal_at_the_api_is_still_a_blocked_directive() -> None:
    h = declared()
    h._add(
        ev.DirectiveRefused,
        ev.DirectiveRefusedPayload(
            action=DRAIN,
            reason=RefusalReason.BLAST_RADIUS,
            detail="too much",
            refused_by="directive-api",
            checked_at_sequence=2,
        ),
        ALICE,
        "api-refused",
    )
    state = state_of(h)
    record = state.directives["api-refused"]
    assert record.status is DirectiveStatus.REFUSED and record.consequential
    assert record.refusal is RefusalReason.BLAST_RADIUS and record.refusal_detail == "too much"
    assert record.based_on_sequence == 2 and record.actor_id == "alice"
    assert record.issued_sequence == state.sequence
    assert [d.correlation_id for d in state.blocked_directives()] == ["api-refused"]
    assert "api-refused" not in state.unfinished


def test_a_second_decision_does_not_overturn_the_first() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)
    state = state_of(h)
    assert state.directives[cid].status is DirectiveStatus.ACCEPTED
    assert state.conflicting_records == 1
    assert state.open_step == cid and state.last_step == cid
    h2 = declared()
    cid2 = h2.direct(DRAIN)
    h2.refuse(cid2, DRAIN, RefusalReason.STALE_BASE)
    h2.accept(cid2, DRAIN)
    state2 = state_of(h2)
    assert state2.directives[cid2].status is DirectiveStatus.REFUSED
    assert state2.conflicting_records == 1 and state2.open_step is None


# --- steps ---------------------------------------------------------------------------


def test_a_start_records_who_and_when_and_counts_the_blast_radius() -> None:
    h = declared()
    cid = started(h, DRAIN)
    state = state_of(h)
    record = state.directives[cid]
    assert record.status is DirectiveStatus.STARTED
    assert record.started_by == "x1" and record.started_at == h.events[-1].occurred_at
    assert state.consequential_steps == 1 and state.last_step == cid and state.open_step == cid
    assert state.drained_pools == {"us-east": {"cache-invalidation"}}
    assert state.state_changed_at == state.sequence
    assert cid in state.unfinished


def test_a_read_started_counts_nothing() -> None:
    h = declared()
    cid = h.direct(Verify())
    h.accept(cid, Verify(), consequential=False)
    h.start(cid, Verify())
    state = state_of(h)
    assert state.consequential_steps == 0 and state.open_step is None
    assert state.last_step is None


def test_a_start_without_acceptance_is_shown_and_counted_as_a_conflict() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.start(cid, DRAIN)
    state = state_of(h)
    assert state.directives[cid].status is DirectiveStatus.STARTED
    assert state.conflicting_records == 1
    h.start(cid, DRAIN, executor_id="x2")  # a second start: the first one stands
    state = state_of(h)
    assert state.directives[cid].started_by == "x1"
    assert state.conflicting_records == 2
    assert state.consequential_steps == 1


def test_outcomes_finish_a_step_once() -> None:
    h = declared()
    cid = started(h)
    h.succeed(cid, DRAIN)
    state = state_of(h)
    record = state.directives[cid]
    assert record.status is DirectiveStatus.SUCCEEDED
    assert record.finished_at == h.events[-1].occurred_at
    assert record.result is not None and record.result.idempotency_key == cid
    assert cid not in state.unfinished
    assert state.state_changed_at == state.sequence
    h.fail(cid, DRAIN)  # a late outcome of a fenced-out executor
    h.unknown(cid, DRAIN)
    late = state_of(h)
    assert late.directives[cid].status is DirectiveStatus.SUCCEEDED
    assert late.conflicting_records == 2 and late.hold is None
    assert late.state_changed_at == state.state_changed_at


def test_an_unknown_outcome_is_finished_and_keeps_the_gate_closed() -> None:
    h = declared()
    cid = started(h)
    h.unknown(cid, DRAIN)
    state = state_of(h)
    assert state.directives[cid].status is DirectiveStatus.OUTCOME_UNKNOWN
    assert state.open_step == cid
    assert [d.correlation_id for d in state.unverified_changes()] == [cid]


def test_the_pre_step_observation_is_the_first_one_gathered_for_the_step() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    first = Observation(metrics=())
    h.gather(cid, observation=first)
    reading = MetricsReading(
        region="us-east",
        error_rate=0,
        queue_depth=0,
        request_rate=1,
        observed_at=h.events[-1].occurred_at,
    )
    h.gather(cid, observation=Observation(metrics=(reading,)))
    h.gather(cid, purpose="directed", observation=Observation(metrics=(reading,)))
    assert state_of(h).directives[cid].pre_step == first


# --- control verbs -----------------------------------------------------------------------


def test_a_resume_lifts_the_hold_and_opens_the_gate() -> None:
    h = declared()
    cid = started(h)
    h.fail(cid, DRAIN)
    h.resume()
    state = state_of(h)
    assert state.hold is None and state.open_step is None
    assert state.state_changed_at == state.sequence


def test_a_manual_hold_is_a_state_change_with_its_reason() -> None:
    h = declared()
    h.hold()
    state = state_of(h)
    assert state.hold is not None and state.hold.reason is HoldReason.MANUAL
    assert state.hold.since_sequence == state.sequence == state.state_changed_at
    assert state.holds_declared == 1


def test_a_takeover_moves_the_conn_and_clears_the_hold() -> None:
    h = declared()
    cid = started(h)
    h.fail(cid, DRAIN)
    h.request_takeover()
    assert state_of(h).takeover_requested_to == "database-platform"
    sha = h.packet()
    h.take_over(sha)
    state = state_of(h)
    assert state.holder is not None
    assert (state.holder.identity, state.holder.team) == ("dana", "database-platform")
    assert state.hold is None and state.open_step is None
    assert state.takeover_requested_to is None and state.takeovers_accepted == 1
    assert state.state_changed_at == state.sequence
    assert state.ignored_controls == 0


def test_an_unentitled_takeover_changes_nothing_but_the_count() -> None:
    h = declared()
    sha = h.packet()
    h.take_over(sha, actor=ALICE)  # not a specialist of the team
    state = state_of(h)
    assert state.holder is not None and state.holder.identity == "alice"
    assert state.ignored_controls == 1 and state.takeovers_accepted == 0


def test_an_older_packet_published_late_never_replaces_a_newer_one() -> None:
    h = declared()
    h.packet("b" * 64, basis=5)
    h.packet("c" * 64, basis=3)
    assert state_of(h).last_packet is not None
    assert state_of(h).last_packet.sha256 == "b" * 64  # type: ignore[union-attr]
    h.packet("d" * 64, basis=5)  # the same basis: the later record stands
    packet = state_of(h).last_packet
    assert packet is not None and packet.sha256 == "d" * 64 and packet.basis == 5
    assert packet.sequence == h.position and packet.to_team == "database-platform"


# --- what a takeover packet shows (invariant 9) ----------------------------------------------


def test_packet_neutral_records_do_not_make_a_new_packet_due() -> None:
    h = declared()
    due = state_of(h).packet_changed_at
    assert due == h.position
    h.alert()
    h.note()
    h.packet()
    assert state_of(h).packet_changed_at == due
    h.direct(DRAIN)  # a pending directive is shown in the packet
    assert state_of(h).packet_changed_at == h.position


def test_an_ignored_control_changes_nothing_a_packet_shows() -> None:
    h = declared()
    due = state_of(h).packet_changed_at
    h.resume()  # not on hold: ignored
    h.hold(actor=EXECUTOR.model_copy(update={"kind": "human", "roles": ()}))
    state = state_of(h)
    assert state.ignored_controls == 2
    assert state.packet_changed_at == due and state.state_changed_at == due


# --- superseding (what the executor re-checks) ----------------------------------------------


def test_the_first_state_change_after_a_directive_supersedes_it_and_later_ones_do_not() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.alert()
    assert state_of(h).directives[cid].superseded_at is None
    h.hold()
    first = h.position
    h.resume()
    record = state_of(h).directives[cid]
    assert record.superseded_at == first
    assert record.superseded_by == "HoldDeclared"


def test_its_own_records_never_supersede_a_directive() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.gather(cid)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    assert state_of(h).directives[cid].superseded_at is None


def test_a_takeover_request_supersedes_a_queued_directive() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.request_takeover()
    record = state_of(h).directives[cid]
    assert record.superseded_at == h.position
    assert record.superseded_by == "TakeoverRequested"


def test_a_finished_directive_is_not_superseded() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)
    h.hold()
    assert state_of(h).directives[cid].superseded_at is None


def test_a_replayed_directive_changes_nothing() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.direct(RESTART, cid=cid)  # another record reusing the correlation id
    state = state_of(h)
    assert state.directives[cid].action == DRAIN
    assert state.directives[cid].issued_sequence == 3


def test_a_directive_without_a_correlation_id_is_not_recorded() -> None:
    h = declared()
    h._add(
        ev.DirectiveIssued,
        ev.DirectiveIssuedPayload(action=DRAIN, based_on_sequence=2),
        ALICE,
        None,
    )
    state = state_of(h)
    assert state.directives == {} and state.open_step is None


# --- the kill switch (invariant 7) -------------------------------------------------------


def test_the_kill_switch_is_folded_from_control_records_only() -> None:
    h = History()
    control = ControlState()
    engaged = h.kill_switch(True)
    assert evolve_control(control, engaged) is control
    assert control.kill_switch and control.reason == "drill"
    assert control.changed_by == "root" and control.changed_at == engaged.occurred_at
    released = h.kill_switch(False)
    evolve_control(control, released)
    assert not control.kill_switch and control.changed_at == released.occurred_at
    before = ControlState(**vars(control))
    evolve_control(control, declared().events[0])  # not a control record
    assert control == before


# --- what the fold keeps, exactly (for the packet, the console and `conn replay`) ----------


def test_ignored_records_and_conflicts_are_counted_one_by_one() -> None:
    h = declared()
    for _ in range(3):
        h.resume()  # not on hold: ignored
        h.request_takeover(team="payments")  # not a takeover team: ignored
    sha = h.packet()
    h.take_over(sha, actor=ALICE)  # not a specialist: ignored
    state = state_of(h)
    assert state.ignored_controls == 7
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    for _ in range(3):
        h.accept(cid, DRAIN)
        h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)
    assert state_of(h).conflicting_records == 6
    assert state_of(h).refusals == {RefusalReason.STALE_BASE: 3}


def test_ignored_authority_proposals_are_counted_one_by_one() -> None:
    h = declared()
    content = RUNBOOK.read_bytes().replace(
        b"max_consequential_steps: 10", b"max_consequential_steps: 5"
    )
    h.propose(content, proposal_id="p-1")  # does not widen: ignored
    h.propose(content, proposal_id="p-2")
    assert state_of(h).ignored_authority == 2
    assert state_of(h).authority_proposals == {}


def test_a_proposal_is_kept_with_everything_an_approver_must_see() -> None:
    h = declared()
    content = RUNBOOK.read_bytes().replace(
        b"max_consequential_steps: 10", b"max_consequential_steps: 12"
    )
    sha = h.propose(content, proposal_id="p-7")
    state = state_of(h)
    proposal = state.authority_proposals["p-7"]
    assert proposal.proposal_id == "p-7" and proposal.content_sha256 == sha
    assert proposal.source_file == "wider.yaml" and proposal.widenings == ("wider",)
    assert proposal.proposed_sequence == state.sequence and proposal.proposer == "alice"
    assert proposal.base_sha256 == state.authority_sha256
    assert state.authority_source == "checkout-authority.yaml"


def test_a_directive_keeps_its_expectation_and_an_api_refusal_its_action() -> None:
    from conn_schemas.values import WorkerPoolExpectation

    h = declared()
    exp = WorkerPoolExpectation(pool="cache-invalidation", region="us-east", drained=False)
    cid = h.direct(DRAIN, expectation=exp)
    assert state_of(h).directives[cid].expectation == exp
    h._add(
        ev.DirectiveRefused,
        ev.DirectiveRefusedPayload(
            action=RESTART,
            reason=RefusalReason.KILL_SWITCH,
            detail="stopped",
            refused_by="directive-api",
            checked_at_sequence=2,
        ),
        ALICE,
        "api-2",
    )
    assert state_of(h).directives["api-2"].action == RESTART


def test_a_manual_hold_keeps_its_detail_and_correlation() -> None:
    h = declared()
    h._add(
        ev.HoldDeclared,
        ev.HoldDeclaredPayload(reason=HoldReason.MANUAL, detail="wait for db team"),
        ALICE,
        "corr-9",
    )
    hold = state_of(h).hold
    assert hold is not None and hold.detail == "wait for db team"
    assert hold.correlation_id == "corr-9"


def test_holds_and_takeovers_are_counted_one_by_one() -> None:
    h = declared()
    h.hold()
    h.hold()
    h.hold()
    assert state_of(h).holds_declared == 3
    for n in (1, 2):
        sha = h.packet(f"{n}" * 64)
        h.take_over(sha)
    assert state_of(h).takeovers_accepted == 2


def test_restarts_are_counted_per_tier_and_region() -> None:
    h = declared()
    other = RestartDependencyTier(tier="inventory-api", region="eu-west")
    for action in (RESTART, other):
        cid = started(h, action)
        h.succeed(cid, action)
        h.snapshot(cid, Verdict.RECOVERED)
    assert state_of(h).restarts == {
        ("pricing-cache", "us-east"): 1,
        ("inventory-api", "eu-west"): 1,
    }


def test_an_unknown_outcome_remembers_what_was_gathered() -> None:
    h = declared()
    cid = started(h)
    reading = MetricsReading(
        region="eu-west",
        error_rate=0.1,
        queue_depth=3,
        request_rate=9,
        observed_at=h.events[-1].occurred_at,
    )
    h._add(
        ev.StepOutcomeUnknown,
        ev.StepOutcomeUnknownPayload(
            action=DRAIN, reason="timeout", observation=Observation(metrics=(reading,))
        ),
        EXECUTOR,
        cid,
    )
    assert state_of(h).last_readings["eu-west"] == reading


def test_a_packet_and_a_snapshot_keep_their_trigger_and_time() -> None:
    h = declared()
    h.packet(team=None)
    packet = state_of(h).last_packet
    assert packet is not None and packet.trigger == "hold" and packet.to_team is None
    cid = started(h)
    h.snapshot(cid, Verdict.RECOVERED)
    assert state_of(h).last_verification_at["us-east"] == h.events[-1].occurred_at


def test_a_snapshot_without_a_step_holds_against_its_own_correlation() -> None:
    h = declared()
    h._add(
        ev.VerificationSnapshot,
        _snapshot_payload(h),
        EXECUTOR.model_copy(update={"id": "verifier"}),
        "verify-1",
    )
    hold = state_of(h).hold
    assert hold is not None and hold.correlation_id == "verify-1"


def _snapshot_payload(h: History) -> ev.VerificationSnapshotPayload:
    from conn_schemas.values import VerificationCriteria

    at = h.events[-1].occurred_at
    return ev.VerificationSnapshotPayload(
        trigger="directive",
        step_correlation_id=None,
        regions=(),
        criteria=VerificationCriteria(),
        verdict=Verdict.STALE_METRICS,
        detail="no region could be sampled",
        window_started_at=at,
        window_ended_at=at,
    )


def test_a_release_of_the_kill_switch_is_exactly_false_with_its_reason() -> None:
    control = evolve_control(ControlState(), History().kill_switch(True))
    evolve_control(control, History().kill_switch(False))
    assert control.kill_switch is False
    assert control.reason == "drill"


def test_restarts_of_one_tier_and_region_add_up() -> None:
    content = RUNBOOK.read_bytes().replace(
        b"max_restarts_per_tier_region: 1", b"max_restarts_per_tier_region: 2"
    )
    h = History().open().declare(content=content)
    for _ in range(2):
        cid = started(h, RESTART)
        h.succeed(cid, RESTART)
        h.snapshot(cid, Verdict.RECOVERED)
    assert state_of(h).restarts == {("pricing-cache", "us-east"): 2}
