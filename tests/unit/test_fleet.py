"""Fleet SLIs (conn_core.fleet) on hand-built ledgers whose right answer is known.

The oracles are the README's definitions (section "Fleet SLIs"), written out by hand
for each ledger below, not read back from the code.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from builders import ALICE, CAROL, DANA, MALLORY, RUNBOOK, T0, History
from hypothesis import given, settings
from hypothesis import strategies as st
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Keys, forgeries, restamp

from conn_core import fleet
from conn_schemas import events as ev
from conn_schemas.codec import UnreadableRecord, encode
from conn_schemas.signing import open_record
from conn_schemas.values import (
    Action,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    GatherState,
    RefusalReason,
    RestartDependencyTier,
    Verdict,
)

DRAIN = DrainWorkerPool(pool="checkout-workers", region="eu-west")
FLAG = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
RESTART = RestartDependencyTier(tier="cache", region="eu-west")


def opened(incident: str = "inc-1") -> History:
    return History(incident).open().declare()


def step(h: History, action: Action, *, verdict: Verdict | None = Verdict.RECOVERED) -> str:
    """Directed, accepted, started, succeeded, and (optionally) verified."""
    cid = h.direct(action)
    h.accept(cid, action)
    h.start(cid, action)
    h.succeed(cid, action)
    if verdict is not None:
        h.snapshot(cid, verdict)
    return cid


def one(events: list[ev.Envelope]) -> fleet.IncidentSLIs:
    (only,) = fleet.incident_slis(events).values()
    return only


def totals(events: list[ev.Envelope], **window: datetime) -> dict[str, object]:
    return fleet.fleet_report(events, **window)["totals"]  # type: ignore[no-any-return]


# --- safe completion ---------------------------------------------------------------------------


def test_a_verified_and_closed_run_is_a_safe_completion() -> None:
    h = opened()
    step(h, DRAIN)
    step(h, FLAG)
    h.close()
    got = one(h.events)
    assert got.safe_completion
    assert got.consequential_steps == 2
    assert (got.traces, got.traces_complete) == (2, 2)
    assert got.unauthorized_side_effects == got.duplicate_side_effects == 0
    t = totals(h.events)
    assert t["safe_completion_rate"] == 1.0 and t["closed"] == 1


def test_an_open_incident_is_never_a_safe_completion_and_is_not_in_the_denominator() -> None:
    h = opened()
    step(h, DRAIN)
    got = one(h.events)
    assert not got.safe_completion and not got.closed
    t = totals(h.events)
    assert (t["closed"], t["safe_completion_rate"]) == (0, None)


def test_an_unverified_step_makes_a_closed_run_unsafe() -> None:
    h = opened()
    step(h, DRAIN, verdict=Verdict.NOT_RECOVERED)
    h.close()
    assert not one(h.events).safe_completion


def test_an_unverified_step_that_ended_in_an_accepted_takeover_is_safe() -> None:
    h = opened()
    step(h, DRAIN, verdict=Verdict.NOT_RECOVERED)
    sha = h.packet("a" * 64, team=None)  # the hold packet
    h.take_over(sha)
    h.close()
    got = one(h.events)
    assert got.safe_completion
    assert got.escalated and got.packets_accepted == 1


def test_a_takeover_before_the_step_does_not_settle_it() -> None:
    h = opened()
    sha = h.packet("a" * 64, team=None)
    h.take_over(sha)
    # the specialist now holds the conn; their unverified step is not settled by the
    # takeover that came before it
    cid = h.direct(DRAIN, actor=ev.Actor(kind="human", id="dana", roles=("specialist",)))
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.succeed(cid, DRAIN)
    h.close()
    assert not one(h.events).safe_completion


def test_a_side_effect_on_a_refused_directive_is_unauthorized() -> None:
    h = opened()
    cid = h.direct(DRAIN)
    h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)
    h.start(cid, DRAIN)  # an executor that lost its claim acted anyway
    h.succeed(cid, DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    h.close()
    got = one(h.events)
    assert got.unauthorized_side_effects == 1
    assert not got.safe_completion
    assert got.caught_by_reason == {}  # refused but executed: not caught


# Two-person rule (DESIGN.md invariant 11): a step that needs approvals is entitled
# only with its quorum of distinct approvers, none declining, in time.
APPROVED_DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
TWO_APPROVERS = b"""
approvals:
  - action: drain_worker_pool
    targets: [cache-invalidation]
    count: 2
    roles: [commander, specialist]
    expires_after: 60
"""


def _needs_approval() -> tuple[History, str]:
    h = History("inc-2p").open().declare(content=RUNBOOK.read_bytes() + TWO_APPROVERS)
    return h, h.direct(APPROVED_DRAIN, actor=ALICE)


def _approve(h: History, cid: str, *who: Actor) -> None:
    from conn_core import approvals
    from conn_core.fold import fold

    for actor in who:
        sha = approvals.current_sha256(fold(h.events, h.incident_id), cid)
        assert sha is not None
        h._add(ev.ApprovalRecorded, ev.ApprovalRecordedPayload(packet_sha256=sha), actor, cid)


def _run(h: History, cid: str) -> None:
    h.accept(cid, APPROVED_DRAIN)
    h.start(cid, APPROVED_DRAIN)
    h.succeed(cid, APPROVED_DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    h.close()


def test_a_side_effect_without_its_required_approvals_is_unauthorized() -> None:
    h, cid = _needs_approval()
    _approve(h, cid, CAROL)  # one of two
    _run(h, cid)
    got = one(h.events)
    assert got.unauthorized_side_effects == 1 and not got.safe_completion


def test_a_side_effect_with_its_quorum_is_entitled() -> None:
    h, cid = _needs_approval()
    _approve(h, cid, CAROL, DANA)
    _run(h, cid)
    got = one(h.events)
    assert got.unauthorized_side_effects == 0 and got.safe_completion


def test_a_side_effect_nobody_directed_is_unauthorized() -> None:
    h = opened()
    h.start("d-nobody", DRAIN)  # no DirectiveIssued in the ledger
    h.succeed("d-other", FLAG)
    h.close()
    got = one(h.events)
    assert got.unauthorized_side_effects == 2
    assert not got.safe_completion


def test_a_step_started_before_its_acceptance_is_unauthorized() -> None:
    h = opened()
    cid = h.direct(DRAIN)
    h.start(cid, DRAIN)
    h.accept(cid, DRAIN)  # the fold keeps the start; the acceptance came too late
    h.succeed(cid, DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    h.close()
    got = one(h.events)
    assert got.unauthorized_side_effects == 1 and not got.safe_completion


def test_an_outcome_on_a_directive_never_accepted_is_an_unauthorized_side_effect() -> None:
    h = opened()
    cid = h.direct(DRAIN)
    h.succeed(cid, DRAIN)  # no acceptance, no start: the fold ignores it; we do not
    h.close()
    assert one(h.events).unauthorized_side_effects == 1


def test_a_step_stopped_at_the_last_gate_had_no_side_effect() -> None:
    h = opened()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.fail_not_started(cid, DRAIN)
    h.close()
    got = one(h.events)
    assert got.safe_completion
    assert (got.consequential_steps, got.traces) == (0, 0)


def test_a_second_start_of_one_step_is_a_duplicate_side_effect() -> None:
    h = opened()
    cid = step(h, DRAIN)
    h.start(cid, DRAIN, executor_id="x2")  # a distinct record: a second side effect
    h.close()
    got = one(h.events)
    assert got.duplicate_side_effects == 1
    assert not got.safe_completion


# --- duplicates, forgeries, order ---------------------------------------------------------------


def test_a_record_published_twice_is_counted_once() -> None:
    h = opened()
    step(h, DRAIN)
    cid = h.direct(FLAG)
    h.refuse(cid, FLAG, RefusalReason.ON_HOLD)
    h.close()
    doubled: list[ev.Envelope] = []
    for e in h.events:
        doubled += [e, e]
    assert fleet.fleet_report(doubled)["totals"] == {
        **fleet.fleet_report(h.events)["totals"],
        "ignored_records": len(h.events),
    }
    got = one(doubled)
    assert got.duplicate_side_effects == 0 and got.safe_completion
    assert got.caught_by_reason == {"incident_on_hold": 1}


def test_a_takeover_the_fold_does_not_honour_counts_for_nothing() -> None:
    h = opened()
    step(h, DRAIN, verdict=Verdict.NOT_RECOVERED)
    sha = h.packet("a" * 64, team=None)
    h.take_over("f" * 64)  # not the published packet's hash
    h.take_over(sha, actor=MALLORY)  # not a specialist of the team
    h.close()
    got = one(h.events)
    assert got.packets_accepted == 0
    assert not got.safe_completion
    assert got.ignored_records == 2


def _sign_all(events: list[ev.Envelope], keys: Keys) -> list[tuple[bytes, bytes, list]]:  # type: ignore[type-arg]
    out = []
    for e in events:
        role = OWNER[e.event_type]
        own = restamp(e, PRINCIPAL_OF_ROLE[role], role)
        value = encode(own)
        out.append((value, own.incident_id.encode(), keys.headers(value, PRINCIPAL_OF_ROLE[role])))
    return out


def _trusted(records: list[tuple[bytes, bytes, list]], keys: Keys) -> list[ev.Envelope]:  # type: ignore[type-arg]
    """What every consumer (and `conn replay`) folds: records that verify."""
    out: list[ev.Envelope] = []
    for value, key, headers in records:
        try:
            out.append(
                open_record(
                    keys.keyring, value=value, key=key, headers=headers, on_control=False
                ).event
            )
        except UnreadableRecord:  # UntrustedRecord is a subclass
            continue
    return out


def test_forged_records_do_not_count() -> None:
    keys = Keys.fresh()
    h = opened()
    step(h, DRAIN, verdict=Verdict.NOT_RECOVERED)
    h.close()
    genuine = _sign_all(h.events, keys)
    # the adversary: every forgery of a takeover that would settle the step, of a
    # recovery snapshot, and of an unauthorized side effect
    forger = History("inc-1")
    forger._tick = iter(range(100, 200))  # type: ignore[assignment]
    forger.take_over("a" * 64)
    forger.snapshot(h.events[3].correlation_id or "", Verdict.RECOVERED)
    forger.start("d-forged", RESTART)
    forged = []
    for e in forger.events:
        role = OWNER[e.event_type]
        stamped = restamp(e, PRINCIPAL_OF_ROLE[role], role)
        forged += [(f.value, f.key, f.headers) for f in forgeries(stamped, keys)]
    assert forged
    mixed = genuine[:-1] + forged + genuine[-1:]
    trusted = _trusted(mixed, keys)
    assert len(trusted) == len(h.events)
    assert fleet.fleet_report(trusted) == fleet.fleet_report(_trusted(genuine, keys))
    got = one(trusted)
    assert not got.safe_completion and got.unauthorized_side_effects == 0


def test_log_order_decides_not_timestamps() -> None:
    h = opened()
    step(h, DRAIN)
    h.close()
    # every producer's clock is wrong: timestamps run backwards
    skewed = [
        e.model_copy(update={"occurred_at": T0 - timedelta(seconds=i)})
        for i, e in enumerate(h.events)
    ]
    got = one(skewed)
    assert got.safe_completion and got.traces_complete == 1
    assert got.time_to_first_action == 0.0  # never negative


def test_a_start_before_its_directive_stays_unauthorized_when_redelivered_in_place() -> None:
    h = opened()
    cid = step(h, DRAIN)
    h.close()
    events = list(h.events)
    started = events[4]
    assert isinstance(started, ev.StepStarted)
    # the start lands before its directive; the same record re-delivered later (where it
    # belonged) is a duplicate: the first occurrence is what the log says
    early = [*events[:2], started, *events[2:]]
    got = one(early)
    assert got.unauthorized_side_effects == 1 and not got.safe_completion
    assert got.traces_complete == 0 and cid


def test_a_trace_out_of_log_order_is_incomplete() -> None:
    h = opened()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.succeed(cid, DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    h.close()
    ok = one(h.events)
    assert (ok.traces, ok.traces_complete) == (1, 1)
    events = list(h.events)
    # the snapshot lands before the outcome it is meant to verify
    events[5], events[6] = events[6], events[5]
    got = one(events)
    assert (got.traces, got.traces_complete) == (1, 0)


def test_interleaved_incidents_give_the_same_report() -> None:
    a, b = opened("inc-a"), opened("inc-b")
    step(a, DRAIN)
    a.close()
    step(b, FLAG, verdict=Verdict.NOT_RECOVERED)
    sequential = a.events + b.events
    mixed = list(sequential)
    rng = random.Random(7)
    # a random interleaving that keeps each incident's own order
    qa, qb, mixed = list(a.events), list(b.events), []
    while qa or qb:
        q = qa if qb == [] or (qa and rng.random() < 0.5) else qb
        mixed.append(q.pop(0))
    assert fleet.fleet_report(mixed) == fleet.fleet_report(sequential)


# --- caught ----------------------------------------------------------------------------------


def test_caught_is_refusals_by_reason_over_requests() -> None:
    h = opened()
    step(h, DRAIN)
    stale = h.direct(FLAG)
    h.refuse(stale, FLAG, RefusalReason.STALE_BASE)
    h.refuse(stale, FLAG, RefusalReason.ON_HOLD)  # a second decision: the first stands
    # refused at the API: a DirectiveRefused with no DirectiveIssued
    h._add(
        ev.DirectiveRefused,
        ev.DirectiveRefusedPayload(
            action=RESTART,
            reason=RefusalReason.REGION_NOT_ALLOWED,
            detail="no",
            refused_by="directive-api",
            checked_at_sequence=3,
        ),
        ALICE,
        "d-api",
    )
    gather = h.direct(GatherState())
    h.accept(gather, GatherState(), consequential=False)
    got = one(h.events)
    assert got.requests == 4
    assert got.caught_by_reason == {"stale_base_position": 1, "region_not_allowed": 1}
    t = totals(h.events)
    assert (t["caught"], t["requests"], t["caught_rate"]) == (2, 4, 0.5)


# --- trace completeness --------------------------------------------------------------------------


def test_trace_needs_every_link() -> None:
    h = opened()
    step(h, DRAIN, verdict=None)  # no verification yet
    cid = h.direct(FLAG)
    h.accept(cid, FLAG)
    h.start(cid, FLAG)
    h.unknown(cid, FLAG)  # an unknown outcome is an outcome
    h.snapshot(cid, Verdict.NOT_RECOVERED)
    gather = h.direct(GatherState())  # not consequential: no trace needed
    h.accept(gather, GatherState(), consequential=False)
    h.start(gather, GatherState())
    got = one(h.events)
    assert (got.traces, got.traces_complete) == (2, 1)


def test_a_snapshot_not_linked_to_the_step_does_not_complete_its_trace() -> None:
    h = opened()
    cid = step(h, DRAIN, verdict=None)
    h.snapshot("d-something-else", Verdict.RECOVERED)
    got = one(h.events)
    assert (got.traces, got.traces_complete) == (1, 0)
    h.snapshot(cid, Verdict.RECOVERED)
    assert one(h.events).traces_complete == 1


# --- false action ----------------------------------------------------------------------------


def test_an_unrecovered_step_undone_on_the_same_target_is_a_false_action() -> None:
    h = opened()
    step(h, DRAIN, verdict=Verdict.NOT_RECOVERED)
    h.resume()
    step(h, DRAIN)  # the commander acts on the same pool again
    h.close()
    got = one(h.events)
    assert got.false_actions == 1
    t = totals(h.events)
    assert (t["false_actions"], t["false_action_rate"]) == (1, 1.0)


def test_a_step_reversed_by_a_specialist_after_takeover_is_a_false_action() -> None:
    h = opened()
    step(h, FLAG, verdict=Verdict.NOT_RECOVERED)
    sha = h.packet("a" * 64, team=None)
    h.take_over(sha)
    dana = ev.Actor(kind="human", id="dana", roles=("specialist",), team="database-platform")
    cid = h.direct(FLAG, actor=dana)
    h.accept(cid, FLAG)
    h.start(cid, FLAG)
    h.succeed(cid, FLAG)
    h.snapshot(cid, Verdict.RECOVERED)
    h.close()
    assert one(h.events).false_actions == 1


@pytest.mark.parametrize("verdict", [Verdict.RECOVERED, None])
def test_no_false_action_without_a_failed_verification(verdict: Verdict | None) -> None:
    h = opened()
    step(h, DRAIN, verdict=verdict)
    step(h, DRAIN)
    assert one(h.events).false_actions == 0


def test_an_unrecovered_step_followed_by_another_target_is_not_a_false_action() -> None:
    h = opened()
    step(h, DRAIN, verdict=Verdict.NOT_RECOVERED)
    h.resume()
    step(h, RESTART)
    assert one(h.events).false_actions == 0


# --- packet reliability ------------------------------------------------------------------------


def _handed_over(verdict: Verdict) -> tuple[History, str]:
    h = opened()
    cid = step(h, DRAIN, verdict=verdict)
    sha = h.packet("a" * 64, team=None)
    h.take_over(sha)
    return h, cid


def test_a_packet_after_which_the_partial_change_was_verified_is_reliable() -> None:
    h, cid = _handed_over(Verdict.NOT_RECOVERED)
    h.snapshot(cid, Verdict.RECOVERED)  # the specialist verifies what the packet listed
    h.close()
    got = one(h.events)
    assert (got.packets_accepted, got.packets_judged, got.packets_reliable) == (1, 1, 1)


def test_a_partial_change_left_unaddressed_is_a_skip() -> None:
    h, _ = _handed_over(Verdict.NOT_RECOVERED)
    h.close()
    got = one(h.events)
    assert (got.packets_judged, got.packets_reliable) == (1, 0)


def test_rerunning_a_verified_remediation_after_takeover_is_a_repeat() -> None:
    h = opened()
    step(h, DRAIN)  # verified before the handoff
    h.request_takeover()
    sha = h.packet("b" * 64, team="database-platform")
    h.take_over(sha)
    dana = ev.Actor(kind="human", id="dana", roles=("specialist",), team="database-platform")
    cid = h.direct(DRAIN, actor=dana)  # the packet did not make clear it was done
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.succeed(cid, DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    h.close()
    got = one(h.events)
    assert (got.packets_judged, got.packets_reliable) == (1, 0)


def test_packets_of_open_incidents_are_not_judged_yet() -> None:
    h, _ = _handed_over(Verdict.NOT_RECOVERED)
    got = one(h.events)
    assert (got.packets_accepted, got.packets_judged) == (1, 0)
    assert totals(h.events)["packet_reliability"] is None


# --- seed 001 measures, window and weekly trend ---------------------------------------------------


def test_time_to_first_action_and_to_verified_recovery() -> None:
    h = History("inc-t")
    h.alert()  # t=0: the start (earlier than the opening)
    h.open()  # t=1
    h.declare()  # t=2
    g = h.direct(GatherState())  # t=3: read-only, not an action on the target
    h.accept(g, GatherState(), consequential=False)  # 4
    h.start(g, GatherState())  # 5
    cid = h.direct(DRAIN)  # 6
    h.accept(cid, DRAIN)  # 7
    h.start(cid, DRAIN)  # 8: first action
    h.succeed(cid, DRAIN)  # 9
    h.snapshot(cid, Verdict.NOT_RECOVERED)  # 10
    h.snapshot(cid, Verdict.RECOVERED)  # 11: verified recovery
    got = one(h.events)
    assert got.time_to_first_action == 8.0
    assert got.time_to_verified_recovery == 11.0


def test_escalation_rate_counts_incidents_that_stopped_for_a_human() -> None:
    calm, stuck, handed = opened("inc-a"), opened("inc-b"), opened("inc-c")
    step(calm, DRAIN)
    step(stuck, DRAIN, verdict=Verdict.NOT_RECOVERED)
    stuck.packet("a" * 64, team=None)
    handed.request_takeover()
    t = totals(calm.events + stuck.events + handed.events)
    assert (t["escalated"], t["incidents"]) == (2, 3)
    assert t["escalation_rate"] == pytest.approx(2 / 3)


def _shift(events: list[ev.Envelope], days: int) -> list[ev.Envelope]:
    return [
        e.model_copy(update={"occurred_at": e.occurred_at + timedelta(days=days)}) for e in events
    ]


def test_weekly_trend_and_window() -> None:
    a, b, c = opened("inc-a"), opened("inc-b"), opened("inc-c")
    step(a, DRAIN)
    a.close()
    step(b, DRAIN, verdict=Verdict.NOT_RECOVERED)
    b.close()
    step(c, FLAG)
    c.close()
    # T0 is Sunday 2026-11-22 (ISO week 47); +1 day is week 48, +8 days week 49
    events = a.events + _shift(b.events, 1) + _shift(c.events, 8)
    report = fleet.fleet_report(events)
    assert [(w["week"], w["incidents"], w["safe_completions"]) for w in report["weeks"]] == [
        ("2026-W47", 1, 1),
        ("2026-W48", 1, 0),
        ("2026-W49", 1, 1),
    ]
    assert report["totals"]["safe_completion_rate"] == pytest.approx(2 / 3)
    since = datetime(2026, 11, 23, tzinfo=UTC)
    until = datetime(2026, 11, 30, tzinfo=UTC)
    windowed = fleet.fleet_report(events, since=since, until=until)
    assert windowed["totals"]["incidents"] == 1
    assert [w["week"] for w in windowed["weeks"]] == ["2026-W48"]
    assert windowed["window"] == {"since": since.isoformat(), "until": until.isoformat()}


def test_markdown_rendering_shows_every_headline_and_the_trend() -> None:
    h = opened()
    step(h, DRAIN)
    h.close()
    text = fleet.render_markdown(fleet.fleet_report(h.events))
    for label, _, _ in fleet.ROWS:
        assert label in text
    assert "| Safe completion | 100.0% (1/1) |" in text
    assert "2026-W47" in text


def test_an_empty_ledger_reports_no_rates() -> None:
    report = fleet.fleet_report([])
    assert report["totals"]["incidents"] == 0
    assert report["totals"]["safe_completion_rate"] is None
    assert report["weeks"] == []
    assert "n/a" in fleet.render_markdown(report)


# --- the adversary: random histories ------------------------------------------------------------

OPS = ("ok", "unrecovered", "refused", "takeover", "orphan", "unentitled", "gather")


def _history(ops: list[str], incident: str = "inc-p") -> History:
    h = opened(incident)
    targets = (DRAIN, FLAG, RESTART)
    for i, op in enumerate(ops):
        action = targets[i % 3]
        if op == "ok":
            step(h, action)
        elif op == "unrecovered":
            step(h, action, verdict=Verdict.NOT_RECOVERED)
        elif op == "refused":
            h.refuse(h.direct(action), action, RefusalReason.STEP_UNVERIFIED)
        elif op == "takeover":
            h.take_over(h.packet(f"{i:064x}", team=None))
        elif op == "orphan":
            h.start(f"d-orphan-{i}", action)
        elif op == "unentitled":
            cid = h.direct(action)
            h.start(cid, action)
        else:
            g = h.direct(GatherState())
            h.accept(g, GatherState(), consequential=False)
    h.close()
    return h


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(st.sampled_from(OPS), max_size=8),
    dup=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_any_history_duplicates_never_change_a_figure(ops: list[str], dup: list[int]) -> None:
    h = _history(ops)
    events = list(h.events)
    # The same record again, later in the log. (Not before a hand-built packet: its
    # basis is a ledger position computed without the duplicate, which the packager,
    # folding the real log, would have counted.)
    last_packet = max(
        (i for i, e in enumerate(events) if isinstance(e, ev.TakeoverPacketPublished)),
        default=-1,
    )
    after: dict[int, list[ev.Envelope]] = {}
    for k in dup:
        i = k % len(events)
        after.setdefault(max(i, last_packet), []).append(events[i])
    replayed = [x for j, e in enumerate(events) for x in (e, *after.get(j, []))]
    base, again = fleet.fleet_report(events)["totals"], fleet.fleet_report(replayed)["totals"]
    assert {**again, "ignored_records": 0} == {**base, "ignored_records": 0}
    got = one(events)
    # oracles straight from the definitions
    bad = ops.count("orphan") + ops.count("unentitled")
    assert got.unauthorized_side_effects == bad
    assert got.traces_complete <= got.traces
    last_unrecovered = max((i for i, op in enumerate(ops) if op == "unrecovered"), default=None)
    if bad or (last_unrecovered is not None and "takeover" not in ops[last_unrecovered:]):
        assert not got.safe_completion
    if not bad and "unrecovered" not in ops:
        assert got.safe_completion
    for key, value in base.items():
        if key.endswith(("_rate", "completeness", "reliability")) and value is not None:
            assert 0.0 <= value <= 1.0, key
