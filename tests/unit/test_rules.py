"""Decision rules and the fold: every refusal reason, derived holds, control verbs,
and property tests that the invariants hold over arbitrary histories."""

from __future__ import annotations

import pytest
from builders import ALICE, DANA, MALLORY, OLIVE, History
from hypothesis import given, settings
from hypothesis import strategies as st

from conn_core.fold import evolve_control, fold
from conn_core.rules import Accepted, Refused, check_control, check_observation, decide
from conn_core.state import ControlState, DirectiveStatus
from conn_schemas import events as ev
from conn_schemas.observations import FlagRuleState, Observation, TierState, WorkerPoolState
from conn_schemas.values import (
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    FlagRuleExpectation,
    GatherState,
    HoldReason,
    RefusalReason,
    RestartDependencyTier,
    Role,
    Verdict,
    Verify,
)

DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
DRAIN_2 = DrainWorkerPool(pool="checkout-workers", region="us-east")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")
RESTART_DB = RestartDependencyTier(tier="orders-db", region="eu-west")
NO_CONTROL = ControlState()


def ready() -> History:
    return History().open().declare()


def decide_next(
    h: History,
    action,  # type: ignore[no-untyped-def]
    *,
    actor: Actor = ALICE,
    based_on: int | None = None,
    control: ControlState = NO_CONTROL,
    expectation=None,  # type: ignore[no-untyped-def]
):  # type: ignore[no-untyped-def]
    state = fold(h.events, h.incident_id)
    payload = ev.DirectiveIssuedPayload(
        action=action,
        expectation=expectation,
        based_on_sequence=state.sequence if based_on is None else based_on,
    )
    return decide(state, payload, actor, control)


def refused(decision, reason: RefusalReason) -> bool:  # type: ignore[no-untyped-def]
    return isinstance(decision, Refused) and decision.reason is reason


def step(h: History, action, verdict: Verdict | None = Verdict.RECOVERED) -> str:  # type: ignore[no-untyped-def]
    cid = h.direct(action)
    h.accept(cid, action)
    h.start(cid, action)
    h.succeed(cid, action)
    if verdict is not None:
        h.snapshot(cid, verdict)
    return cid


# --- each refusal reason ---------------------------------------------------------------


def test_accepts_an_explicit_directive_within_the_boundary() -> None:
    assert decide_next(ready(), DISABLE) == Accepted(consequential=True)
    assert decide_next(ready(), GatherState()) == Accepted(consequential=False)


def test_refuses_before_the_incident_is_open() -> None:
    assert refused(decide_next(History(), GatherState()), RefusalReason.INCIDENT_NOT_OPEN)


def test_refuses_on_a_closed_incident() -> None:
    h = ready()
    h.close()
    assert refused(decide_next(h, GatherState()), RefusalReason.INCIDENT_CLOSED)


def test_refuses_a_service_actor() -> None:
    assert refused(
        decide_next(ready(), DISABLE, actor=Actor.service("robot")), RefusalReason.NOT_HUMAN
    )


def test_refuses_without_authority() -> None:
    assert refused(decide_next(History().open(), GatherState()), RefusalReason.NO_AUTHORITY)


def test_refuses_an_observer() -> None:
    assert refused(
        decide_next(ready(), GatherState(), actor=OLIVE), RefusalReason.ROLE_MAY_NOT_DIRECT
    )


def test_refuses_someone_not_holding_the_conn() -> None:
    assert refused(decide_next(ready(), DISABLE, actor=MALLORY), RefusalReason.NOT_CONN_HOLDER)


def test_refuses_a_stale_base_position() -> None:
    h = ready()
    base = h.position
    g = h.direct(GatherState())
    h.accept(g, GatherState(), consequential=False)
    h._add(
        ev.StateGathered,
        ev.StateGatheredPayload(purpose="directed", observation=Observation()),
        Actor.service("executor"),
        g,
    )
    assert refused(decide_next(h, DISABLE, based_on=base), RefusalReason.STALE_BASE)
    assert decide_next(h, DISABLE) == Accepted(consequential=True)


def test_a_directive_landing_in_between_does_not_make_a_base_stale() -> None:
    h = ready()
    base = h.position
    h.direct(GatherState())  # issued, not yet a state change
    assert decide_next(h, DISABLE, based_on=base) == Accepted(consequential=True)


def test_refuses_a_base_from_the_future() -> None:
    h = ready()
    assert refused(decide_next(h, DISABLE, based_on=h.position + 5), RefusalReason.INVALID_BASE)


def test_refuses_under_the_kill_switch_but_allows_reading() -> None:
    control = evolve_control(ControlState(), History().kill_switch(True))
    h = ready()
    assert refused(decide_next(h, DISABLE, control=control), RefusalReason.KILL_SWITCH)
    assert decide_next(h, GatherState(), control=control) == Accepted(consequential=False)
    evolve_control(control, History().kill_switch(False))
    assert decide_next(h, DISABLE, control=control) == Accepted(consequential=True)


def test_refuses_on_hold_but_allows_reading() -> None:
    h = ready()
    h.hold()
    assert refused(decide_next(h, DISABLE), RefusalReason.ON_HOLD)
    assert decide_next(h, Verify()) == Accepted(consequential=False)


def test_refuses_an_action_outside_the_boundary() -> None:
    h = ready()
    assert refused(
        decide_next(h, DrainWorkerPool(pool="payments", region="us-east")),
        RefusalReason.TARGET_NOT_ALLOWED,
    )
    assert refused(
        decide_next(h, DrainWorkerPool(pool="cache-invalidation", region="ap-south")),
        RefusalReason.REGION_NOT_ALLOWED,
    )


def test_refuses_an_action_type_not_granted() -> None:
    h = History().open()
    from conn_core.authority import parse_authority

    text = (h.events and b"") or b""
    del text
    content = (
        b"name: tiny\nversion: '1'\nholder: {identity: alice}\nregions: [us-east]\n"
        b"allowed: [{action: gather_state}]\n"
    )
    authority, digest = parse_authority(content)
    h._add(
        ev.AuthorityDeclared,
        ev.AuthorityDeclaredPayload(authority=authority, source_file="tiny", content_sha256=digest),
        ALICE,
    )
    assert refused(decide_next(h, DRAIN), RefusalReason.ACTION_NOT_ALLOWED)


def test_orders_db_restart_is_reserved_to_the_database_platform_team() -> None:
    h = ready()
    assert refused(decide_next(h, RESTART_DB), RefusalReason.RESERVED_TO_TEAM)


def test_blast_radius_one_drained_pool_per_region() -> None:
    h = ready()
    step(h, DRAIN)
    assert refused(decide_next(h, DRAIN_2), RefusalReason.BLAST_RADIUS)


def test_blast_radius_one_restart_per_tier_and_region() -> None:
    h = ready()
    step(h, RESTART)
    assert refused(decide_next(h, RESTART), RefusalReason.BLAST_RADIUS)


def test_one_step_at_a_time() -> None:
    h = ready()
    step(h, DISABLE, verdict=None)
    assert refused(decide_next(h, DRAIN), RefusalReason.STEP_UNVERIFIED)
    assert decide_next(h, GatherState()) == Accepted(consequential=False)


def test_an_issued_but_undecided_step_also_blocks_the_next() -> None:
    h = ready()
    h.direct(DISABLE)
    assert refused(decide_next(h, DRAIN), RefusalReason.STEP_UNVERIFIED)


def test_a_refused_step_does_not_block_the_next() -> None:
    h = ready()
    cid = h.direct(DISABLE)
    h.refuse(cid, DISABLE, RefusalReason.BLAST_RADIUS)
    assert decide_next(h, DRAIN) == Accepted(consequential=True)


def test_a_recovered_verification_opens_the_gate() -> None:
    h = ready()
    step(h, DISABLE, verdict=Verdict.RECOVERED)
    assert decide_next(h, DRAIN) == Accepted(consequential=True)


# --- derived holds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "verdict",
    [Verdict.NOT_RECOVERED, Verdict.CONFLICT, Verdict.STALE_METRICS, Verdict.MIXED],
)
def test_any_verdict_but_recovered_derives_a_hold(verdict: Verdict) -> None:
    h = ready()
    step(h, DISABLE, verdict=verdict)
    state = fold(h.events, h.incident_id)
    assert state.hold is not None and state.hold.reason is HoldReason.VERIFICATION
    assert refused(decide_next(h, DRAIN), RefusalReason.ON_HOLD)


def test_a_hold_needs_an_explicit_resume_even_after_a_later_recovery() -> None:
    h = ready()
    cid = step(h, DISABLE, verdict=Verdict.MIXED)
    h.snapshot(cid, Verdict.RECOVERED)
    assert refused(decide_next(h, DRAIN), RefusalReason.ON_HOLD)
    h.resume()
    assert decide_next(h, DRAIN) == Accepted(consequential=True)


def test_resume_releases_the_unverified_gate() -> None:
    h = ready()
    step(h, DISABLE, verdict=Verdict.NOT_RECOVERED)
    h.resume()
    state = fold(h.events, h.incident_id)
    assert state.hold is None and state.open_step is None


@pytest.mark.parametrize(
    ("reason", "hold"),
    [
        (RefusalReason.EXPECTATION_CONFLICT, HoldReason.EXPECTATION_CONFLICT),
        (RefusalReason.PARTIAL_STATE, HoldReason.PARTIAL_STATE),
    ],
)
def test_conflicts_derive_a_hold(reason: RefusalReason, hold: HoldReason) -> None:
    h = ready()
    cid = h.direct(DISABLE)
    h.refuse(cid, DISABLE, reason)
    state = fold(h.events, h.incident_id)
    assert state.hold is not None and state.hold.reason is hold


def test_other_refusals_do_not_hold() -> None:
    h = ready()
    cid = h.direct(DISABLE)
    h.refuse(cid, DISABLE, RefusalReason.BLAST_RADIUS)
    assert fold(h.events, h.incident_id).hold is None


def test_a_failed_step_derives_a_hold() -> None:
    h = ready()
    cid = h.direct(DISABLE)
    h.accept(cid, DISABLE)
    h.start(cid, DISABLE)
    h.fail(cid, DISABLE)
    state = fold(h.events, h.incident_id)
    assert state.hold is not None and state.hold.reason is HoldReason.STEP_FAILED


def test_an_unknown_outcome_keeps_the_step_unverified() -> None:
    h = ready()
    cid = h.direct(DISABLE)
    h.accept(cid, DISABLE)
    h.start(cid, DISABLE)
    h.unknown(cid, DISABLE)
    state = fold(h.events, h.incident_id)
    assert state.directives[cid].status is DirectiveStatus.OUTCOME_UNKNOWN
    assert [d.correlation_id for d in state.unverified_changes()] == [cid]
    assert refused(decide_next(h, DRAIN), RefusalReason.STEP_UNVERIFIED)


def test_replayed_directive_is_folded_once() -> None:
    h = ready()
    cid = h.direct(DISABLE)
    h.direct(DISABLE, cid=cid)
    state = fold(h.events, h.incident_id)
    assert len(state.directives) == 1
    assert state.directives[cid].issued_sequence == 3


# --- takeover --------------------------------------------------------------------------


def test_takeover_moves_the_conn_and_the_old_holder_is_refused() -> None:
    h = ready()
    step(h, RESTART, verdict=Verdict.MIXED)
    h.request_takeover()
    sha = h.packet()
    h.take_over(sha)
    state = fold(h.events, h.incident_id)
    assert state.holder is not None and state.holder.identity == "dana"
    assert state.hold is None
    assert refused(decide_next(h, GatherState()), RefusalReason.NOT_CONN_HOLDER)
    assert decide_next(h, RESTART_DB, actor=DANA) == Accepted(consequential=True)


def test_takeover_needs_the_latest_packet() -> None:
    h = ready()
    h.hold()
    h.packet("a" * 64)
    h.packet("b" * 64)
    h.take_over("a" * 64)
    state = fold(h.events, h.incident_id)
    assert state.holder is not None and state.holder.identity == "alice"
    assert state.ignored_controls == 1


def test_takeover_needs_a_member_of_the_team() -> None:
    h = ready()
    sha = h.packet()
    rob = Actor(kind="human", id="rob", roles=(Role.SPECIALIST,), team="rollback-authority")
    accepted = ev.new_event(
        ev.TakeoverAccepted,
        incident_id=h.incident_id,
        payload=ev.TakeoverAcceptedPayload(team="database-platform", packet_sha256=sha),
        actor=rob,
        producer="test",
    )
    refusal = check_control(fold(h.events, h.incident_id), accepted)
    assert refusal is not None and refusal.reason is RefusalReason.ROLE_MAY_NOT_DIRECT


def test_resume_by_someone_else_is_ignored() -> None:
    h = ready()
    h.hold()
    h.resume(actor=MALLORY)
    state = fold(h.events, h.incident_id)
    assert state.hold is not None and state.ignored_controls == 1


def test_takeover_to_an_undeclared_team_is_refused() -> None:
    h = ready()
    event = ev.new_event(
        ev.TakeoverRequested,
        incident_id=h.incident_id,
        payload=ev.TakeoverRequestedPayload(to_team="marketing"),
        actor=ALICE,
        producer="test",
    )
    refusal = check_control(fold(h.events, h.incident_id), event)
    assert refusal is not None and refusal.reason is RefusalReason.TARGET_NOT_ALLOWED


# --- gather before acting -------------------------------------------------------------


def _flag(enabled: bool) -> Observation:
    return Observation(
        flags=(
            FlagRuleState(
                flag="checkout-pricing",
                rule="canary-10pct",
                region="eu-west",
                enabled=enabled,
                observed_at=History().open().events[0].occurred_at,
            ),
        )
    )


def _payload(action, expectation=None) -> ev.DirectiveIssuedPayload:  # type: ignore[no-untyped-def]
    return ev.DirectiveIssuedPayload(action=action, expectation=expectation, based_on_sequence=0)


def test_observation_matching_the_expectation_passes() -> None:
    exp = FlagRuleExpectation(
        flag="checkout-pricing", rule="canary-10pct", region="eu-west", enabled=True
    )
    assert check_observation(_payload(DISABLE, exp), _flag(True)) is None


def test_observation_conflicting_with_the_expectation_is_refused() -> None:
    exp = FlagRuleExpectation(
        flag="checkout-pricing", rule="canary-10pct", region="eu-west", enabled=True
    )
    refusal = check_observation(_payload(DISABLE, exp), _flag(False))
    assert refusal is not None and refusal.reason is RefusalReason.EXPECTATION_CONFLICT
    assert "observed disabled" in refusal.detail


def test_target_already_changed_is_refused() -> None:
    refusal = check_observation(_payload(DISABLE), _flag(False))
    assert refusal is not None and refusal.reason is RefusalReason.PARTIAL_STATE


def test_unobservable_target_is_refused() -> None:
    refusal = check_observation(_payload(DRAIN), Observation())
    assert refusal is not None and refusal.reason is RefusalReason.EXPECTATION_CONFLICT


def test_pool_mid_drain_and_restarting_tier_are_partial() -> None:
    at = History().open().events[0].occurred_at
    pool = WorkerPoolState(
        pool="cache-invalidation",
        region="us-east",
        desired_replicas=0,
        ready_replicas=2,
        observed_at=at,
    )
    tier = TierState(
        tier="pricing-cache",
        region="us-east",
        healthy=False,
        generation=3,
        restarting=True,
        observed_at=at,
    )
    assert (
        check_observation(_payload(DRAIN), Observation(pools=(pool,))).reason
        is RefusalReason.PARTIAL_STATE
    )  # type: ignore[union-attr]
    assert (
        check_observation(_payload(RESTART), Observation(tiers=(tier,))).reason
        is RefusalReason.PARTIAL_STATE
    )  # type: ignore[union-attr]


# --- properties over arbitrary histories ---------------------------------------------------

COMMANDS = st.sampled_from(
    [
        "disable",
        "drain",
        "drain2",
        "restart",
        "restart_db",
        "gather",
        "verify",
        "recovered",
        "mixed",
        "not_recovered",
        "fail",
        "unknown",
        "hold",
        "resume",
        "packet_takeover",
        "stale",
        "kill",
        "unkill",
        "mallory",
    ]
)
ACTIONS = {
    "disable": DISABLE,
    "drain": DRAIN,
    "drain2": DRAIN_2,
    "restart": RESTART,
    "restart_db": RESTART_DB,
    "gather": GatherState(),
    "verify": Verify(),
}


def run_commands(commands: list[str]) -> tuple[History, list[tuple[int, str, bool]]]:
    """Drive a history the way the services would: every directive is decided
    by `decide` on the prefix before it, and accepted steps run to completion."""
    h = ready()
    control = ControlState()
    holder = ALICE
    decisions: list[tuple[int, str, bool]] = []
    last_step: str | None = None
    outcome = "succeed"
    for command in commands:
        if command in ACTIONS or command in ("stale", "mallory"):
            action = ACTIONS.get(command, DISABLE)
            actor = MALLORY if command == "mallory" else holder
            based_on = 0 if command == "stale" else None
            decision = decide_next(h, action, actor=actor, based_on=based_on, control=control)
            cid = h.direct(action, actor=actor, based_on=based_on)
            if isinstance(decision, Refused):
                h.refuse(cid, action, decision.reason)
            else:
                h.accept(cid, action, decision.consequential)
                if decision.consequential:
                    h.start(cid, action)
                    getattr(h, outcome)(cid, action)
                    outcome = "succeed"
                    last_step = cid
            decisions.append((len(h.events), command, isinstance(decision, Accepted)))
        elif command in ("fail", "unknown"):
            outcome = command  # the next consequential step fails / ends unknown
        elif command in ("recovered", "mixed", "not_recovered") and last_step:
            h.snapshot(last_step, Verdict(command))
        elif command == "hold":
            h.hold(actor=holder)
        elif command == "resume":
            h.resume(actor=holder)
        elif command == "packet_takeover":
            h.request_takeover(actor=holder)
            sha = h.packet()
            h.take_over(sha)
            holder = DANA
        elif command == "kill":
            evolve_control(control, h.kill_switch(True))
        elif command == "unkill":
            evolve_control(control, h.kill_switch(False))
    return h, decisions


# The property "invariants hold over any history" was removed (issue 15): its `fail` and
# `unknown` commands did nothing and its oracle never checked the kill switch, staleness,
# authority or blast radius. tests/unit/test_adversary.py replaces it (an adversary, and
# an oracle read from DESIGN.md that checks every side effect).


@settings(max_examples=200, deadline=None)
@given(st.lists(COMMANDS, max_size=25))
def test_folding_is_deterministic_and_replayable(commands: list[str]) -> None:
    from conn_schemas import codec

    h, _ = run_commands(commands)
    live = fold(h.events, h.incident_id)
    replayed = fold([codec.decode(codec.encode(e)) for e in h.events], h.incident_id)
    assert live == replayed
    assert live.sequence == len(h.events)


def test_a_refusal_at_the_api_is_kept_as_a_blocked_directive() -> None:
    h = ready()
    h.refuse("api-1", RESTART_DB, RefusalReason.RESERVED_TO_TEAM, "reserved")
    state = fold(h.events, h.incident_id)
    (blocked,) = state.blocked_directives()
    assert blocked.correlation_id == "api-1" and blocked.refusal is RefusalReason.RESERVED_TO_TEAM
    assert state.open_step is None
    assert decide_next(h, DRAIN) == Accepted(consequential=True)


def test_a_record_replayed_by_hand_takes_a_position_but_changes_nothing() -> None:
    h = ready()
    cid = step(h, DISABLE, verdict=Verdict.RECOVERED)
    h.resume()  # not on hold: ignored as a control, but a real record
    failing = ev.new_event(
        ev.VerificationSnapshot,
        incident_id=h.incident_id,
        payload=h.events[-2].payload.model_copy(update={"verdict": Verdict.MIXED}),  # type: ignore[attr-defined]
        actor=Actor.service("verifier"),
        producer="test",
        correlation_id=cid,
    )
    h.events.append(failing)
    held = fold(h.events, h.incident_id)
    assert held.hold is not None
    h.resume()
    h.events.append(failing)  # the same record, re-published by hand
    state = fold(h.events, h.incident_id)
    assert state.hold is None, "a replayed failing snapshot must not hold again"
    assert state.duplicate_events == 1
    assert state.sequence == len(h.events)
