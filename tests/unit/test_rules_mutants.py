"""Decision rules, pinned down where mutation testing found the net thin (issue 15).

Removing the `max_consequential_steps` check survived the whole unit tier; removing
the kill-switch, staleness, region or not-human check was caught by one example test
each. Every check below is now exercised from several sides — each action kind, the
boundary value on both sides, at the API (`decide`) and again at the moment of acting
(`recheck`) — with the expected answer taken from DESIGN.md, not from the code:

- invariant 1: only a token-authenticated human holding the conn directs;
- invariant 4: a directive outside the declared boundary (action type, target,
  region, blast radius, role, team) is refused at the API and re-checked by the
  executor at execution time;
- invariant 5: a directive based on a ledger position older than the last state
  change is refused as stale, also immediately before the side effect;
- invariant 7: the kill switch stops new side effects everywhere (reading is not a
  side effect).
"""

from __future__ import annotations

import pytest
from builders import ALICE, CAROL, DANA, MALLORY, OLIVE, ROOT_ADMIN, RUNBOOK, History

from conn_core.authority import parse_authority
from conn_core.fold import evolve_control, fold
from conn_core.rules import (
    Accepted,
    Decision,
    Refused,
    check_authority,
    check_control,
    check_observation,
    decide,
)
from conn_core.rules import recheck as recheck_
from conn_core.state import ControlState, IncidentState
from conn_schemas import events as ev
from conn_schemas.observations import Observation, TierState, WorkerPoolState
from conn_schemas.values import (
    Action,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    GatherState,
    HoldReason,
    RefusalReason,
    RestartDependencyTier,
    Role,
    TierExpectation,
    UpdateIncidentRecord,
    Verdict,
    Verify,
    WorkerPoolExpectation,
)

DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
DRAIN_EU = DrainWorkerPool(pool="checkout-workers", region="eu-west")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")
RESTART_EU = RestartDependencyTier(tier="inventory-api", region="eu-west")
CONSEQUENTIAL: tuple[Action, ...] = (DISABLE, DRAIN, RESTART)
READING: tuple[Action, ...] = (GatherState(), Verify())
NOTE = UpdateIncidentRecord(note="status update")
NO_CONTROL = ControlState()
ROBOT_ALICE = Actor(kind="service", id="alice", roles=(Role.COMMANDER,), team="incident-command")
"""A service claiming the holder's identity and role: not a token-authenticated human."""


def runbook(**replace: str) -> bytes:
    content = RUNBOOK.read_bytes()
    for old, new in replace.items():
        key = old.replace("_", " ") if " " in old else old
        assert key.encode() in content, key
        content = content.replace(key.encode(), new.encode())
    return content


def limited(steps: int) -> bytes:
    return RUNBOOK.read_bytes().replace(
        b"max_consequential_steps: 10", f"max_consequential_steps: {steps}".encode()
    )


def declared(content: bytes | None = None) -> History:
    h = History().open()
    h.declare(content=content)
    return h


def state_of(h: History) -> IncidentState:
    return fold(h.events, h.incident_id)


def decide_now(
    h: History,
    action: Action,
    *,
    actor: Actor = ALICE,
    based_on: int | None = None,
    control: ControlState = NO_CONTROL,
) -> Decision:
    state = state_of(h)
    payload = ev.DirectiveIssuedPayload(
        action=action, based_on_sequence=state.sequence if based_on is None else based_on
    )
    return decide(state, payload, actor, control)


def reason_of(decision: Decision | Refused | None) -> RefusalReason | None:
    return decision.reason if isinstance(decision, Refused) else None


def verified_step(h: History, action: Action) -> str:
    cid = h.direct(action)
    h.accept(cid, action)
    h.start(cid, action)
    h.succeed(cid, action)
    h.snapshot(cid, Verdict.RECOVERED)
    return cid


def recheck(h: History, cid: str, control: ControlState = NO_CONTROL) -> RefusalReason | None:
    return reason_of(recheck_(state_of(h), cid, control, executor_id="x1"))


def kill_switch(engaged: bool = True, control: ControlState | None = None) -> ControlState:
    return evolve_control(control or ControlState(), History().kill_switch(engaged))


# --- blast radius: max_consequential_steps (invariant 4) -----------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_the_step_after_the_limit_is_refused_and_the_last_one_within_it_is_not(
    limit: int,
) -> None:
    h = declared(limited(limit))
    steps = [DISABLE, DRAIN, RESTART]
    for action in steps[: limit - 1]:
        verified_step(h, action)
    # limit - 1 steps taken: one more is within the boundary, for every kind.
    last = steps[limit - 1]
    assert decide_now(h, last) == Accepted(consequential=True)
    verified_step(h, last)
    # The limit is reached: no consequential action of any kind, in any region.
    for action in (DISABLE, DRAIN_EU, RESTART_EU):
        decision = decide_now(h, action)
        assert reason_of(decision) is RefusalReason.BLAST_RADIUS, (limit, action)
        assert isinstance(decision, Refused)
        assert f"the limit is {limit}" in decision.detail
        assert f"{limit} consequential steps taken" in decision.detail


def test_the_step_limit_never_stops_reading_or_recording() -> None:
    h = declared(limited(1))
    verified_step(h, DISABLE)
    for action in READING:
        assert decide_now(h, action) == Accepted(consequential=False)
    assert decide_now(h, NOTE) == Accepted(consequential=False)


def test_a_step_that_never_started_does_not_count_against_the_limit() -> None:
    h = declared(limited(1))
    cid = h.direct(DISABLE)
    h.accept(cid, DISABLE)
    h.fail_not_started(cid, DISABLE)
    assert decide_now(h, DRAIN) == Accepted(consequential=True)


def test_a_step_whose_outcome_is_unknown_counts_against_the_limit() -> None:
    # An unknown outcome may have changed the target: it is spent (invariant 2).
    h = declared(limited(1))
    cid = h.direct(DISABLE)
    h.accept(cid, DISABLE)
    h.start(cid, DISABLE)
    h.unknown(cid, DISABLE)
    h.snapshot(cid, Verdict.RECOVERED)
    h.resume()
    assert reason_of(decide_now(h, DRAIN)) is RefusalReason.BLAST_RADIUS


def test_the_step_limit_is_rechecked_at_the_moment_of_acting() -> None:
    # Accepted with one step left; the authority narrows to "no more steps" before the
    # side effect: the executor must refuse it for the blast radius.
    h = declared(limited(2))
    verified_step(h, DISABLE)
    cid = h.direct(DRAIN)
    assert recheck(h, cid) is None
    h.declare(content=limited(1))
    assert recheck(h, cid) is RefusalReason.BLAST_RADIUS


def test_its_own_start_is_within_the_step_limit_at_the_moment_of_acting() -> None:
    h = declared(limited(2))
    verified_step(h, DISABLE)
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN, executor_id="x1")
    assert recheck(h, cid) is None  # 2 started, but the 2nd is this very step
    # ...while a third, queued behind it, would be over the limit.
    h.succeed(cid, DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    assert reason_of(decide_now(h, RESTART)) is RefusalReason.BLAST_RADIUS


# --- the kill switch (invariant 7) ---------------------------------------------------------


@pytest.mark.parametrize("action", [*CONSEQUENTIAL, NOTE], ids=lambda a: a.action.value)
def test_the_kill_switch_refuses_every_side_effect_at_the_api(action: Action) -> None:
    control = kill_switch()
    decision = decide_now(declared(), action, control=control)
    assert reason_of(decision) is RefusalReason.KILL_SWITCH
    assert isinstance(decision, Refused) and "drill" in decision.detail  # says why
    assert reason_of(decide_now(declared(), action, control=kill_switch(False, control))) is None


@pytest.mark.parametrize("action", READING, ids=lambda a: a.action.value)
def test_the_kill_switch_lets_the_commander_look(action: Action) -> None:
    assert decide_now(declared(), action, control=kill_switch()) == Accepted(consequential=False)


@pytest.mark.parametrize("action", [*CONSEQUENTIAL, NOTE], ids=lambda a: a.action.value)
def test_the_kill_switch_stops_an_accepted_directive_before_its_side_effect(
    action: Action,
) -> None:
    h = declared()
    cid = h.direct(action)
    h.accept(cid, action, consequential=action in CONSEQUENTIAL)
    assert recheck(h, cid) is None
    control = kill_switch()
    assert recheck(h, cid, control) is RefusalReason.KILL_SWITCH
    assert recheck(h, cid, kill_switch(False, control)) is None


def test_the_kill_switch_does_not_stop_an_accepted_read() -> None:
    h = declared()
    cid = h.direct(Verify())
    h.accept(cid, Verify(), consequential=False)
    assert recheck(h, cid, kill_switch()) is None


def test_the_kill_switch_outranks_everything_the_boundary_would_allow() -> None:
    # Even the holder, with a fresh base, no hold, within every limit: stopped.
    h = declared()
    verified_step(h, DISABLE)
    h.resume()
    assert decide_now(h, DRAIN) == Accepted(consequential=True)
    assert reason_of(decide_now(h, DRAIN, control=kill_switch())) is RefusalReason.KILL_SWITCH


# --- freshness (invariant 5) -----------------------------------------------------------


def _state_changes() -> dict[str, object]:
    def snapshot(h: History) -> None:
        cid = verified_step(h, DISABLE)
        del cid

    def hold_and_resume(h: History) -> None:
        h.hold()
        h.resume()

    def narrowing(h: History) -> None:
        h.declare(content=limited(5))

    def gathered(h: History) -> None:
        h.gather(None, purpose="directed")

    return {
        "verified step": snapshot,
        "hold then resume": hold_and_resume,
        "authority narrowed": narrowing,
        "state gathered": gathered,
    }


@pytest.mark.parametrize("change", list(_state_changes()))
def test_a_base_before_the_last_state_change_is_stale_and_one_at_it_is_fresh(
    change: str,
) -> None:
    h = declared()
    before = h.position
    _state_changes()[change](h)  # type: ignore[operator]
    changed_at = state_of(h).state_changed_at
    assert changed_at > before
    h.alert()  # a record that changes nothing moves the head, not the state
    assert reason_of(decide_now(h, DRAIN, based_on=changed_at - 1)) is RefusalReason.STALE_BASE
    assert reason_of(decide_now(h, DRAIN, based_on=before)) is RefusalReason.STALE_BASE
    assert decide_now(h, DRAIN, based_on=changed_at) == Accepted(consequential=True)
    assert decide_now(h, DRAIN, based_on=h.position) == Accepted(consequential=True)


def test_a_stale_base_is_refused_for_reads_too_and_says_where_the_state_changed() -> None:
    h = declared()
    before = h.position
    h.hold()
    h.resume()
    decision = decide_now(h, GatherState(), based_on=before)
    assert reason_of(decision) is RefusalReason.STALE_BASE
    assert isinstance(decision, Refused)
    assert str(state_of(h).state_changed_at) in decision.detail


def test_a_base_beyond_the_head_is_invalid_and_the_head_itself_is_not() -> None:
    h = declared()
    head = state_of(h).sequence
    assert reason_of(decide_now(h, DRAIN, based_on=head + 1)) is RefusalReason.INVALID_BASE
    assert decide_now(h, DRAIN, based_on=head) == Accepted(consequential=True)


@pytest.mark.parametrize("change", list(_state_changes()))
def test_a_state_change_after_the_directive_makes_it_stale_at_the_moment_of_acting(
    change: str,
) -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    assert recheck(h, cid) is None
    if change == "verified step":
        h.gather(None, purpose="directed")  # a verified step would be refused as unverified
    else:
        _state_changes()[change](h)  # type: ignore[operator]
    assert recheck(h, cid) is RefusalReason.STALE_BASE


# --- regions (invariant 4) -----------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="ap-south"),
        DrainWorkerPool(pool="cache-invalidation", region="ap-south"),
        RestartDependencyTier(tier="pricing-cache", region="ap-south"),
        GatherState(regions=("us-east", "ap-south")),
        Verify(regions=("ap-south",)),
    ],
    ids=lambda a: a.action.value,
)
def test_a_region_outside_the_declared_regions_is_refused(action: Action) -> None:
    decision = decide_now(declared(), action)
    assert reason_of(decision) is RefusalReason.REGION_NOT_ALLOWED
    assert isinstance(decision, Refused) and "ap-south" in decision.detail


def test_every_declared_region_is_allowed() -> None:
    h = declared()
    assert decide_now(h, GatherState(regions=("us-east", "eu-west"))) == Accepted(False)
    assert decide_now(h, DRAIN) == Accepted(consequential=True)
    assert decide_now(h, DRAIN_EU) == Accepted(consequential=True)


def test_a_region_dropped_after_the_directive_stops_it_at_the_moment_of_acting() -> None:
    h = declared()
    cid = h.direct(DISABLE)  # eu-west
    h.accept(cid, DISABLE)
    h.declare(content=runbook(**{"regions: [us-east, eu-west]": "regions: [us-east]"}))
    assert recheck(h, cid) is RefusalReason.REGION_NOT_ALLOWED


GRANT_REGIONS = RUNBOOK.read_bytes().replace(
    b"    targets: [cache-invalidation, checkout-workers]",
    b"    targets: [cache-invalidation, checkout-workers]\n    regions: [us-east]",
)


def test_a_grant_limited_to_some_regions_refuses_the_others_as_a_region() -> None:
    h = declared(GRANT_REGIONS)
    assert decide_now(h, DRAIN) == Accepted(consequential=True)
    decision = decide_now(h, DRAIN_EU)
    assert reason_of(decision) is RefusalReason.REGION_NOT_ALLOWED
    assert isinstance(decision, Refused) and "eu-west" in decision.detail
    # ...and a target outside the grant is a target, whatever the region.
    other = DrainWorkerPool(pool="payments", region="us-east")
    assert reason_of(decide_now(h, other)) is RefusalReason.TARGET_NOT_ALLOWED


def test_a_target_granted_in_one_grant_and_a_region_in_another_is_not_enough() -> None:
    content = RUNBOOK.read_bytes().replace(
        b"  - action: drain_worker_pool\n    targets: [cache-invalidation, checkout-workers]",
        b"  - action: drain_worker_pool\n    targets: [cache-invalidation]\n"
        b"    regions: [us-east]\n"
        b"  - action: drain_worker_pool\n    targets: [checkout-workers]\n"
        b"    regions: [eu-west]",
    )
    h = declared(content)
    assert decide_now(h, DRAIN) == Accepted(consequential=True)
    assert decide_now(h, DRAIN_EU) == Accepted(consequential=True)
    crossed = DrainWorkerPool(pool="cache-invalidation", region="eu-west")
    assert reason_of(decide_now(h, crossed)) is RefusalReason.REGION_NOT_ALLOWED


# --- only a human directs (invariant 1) -------------------------------------------------


@pytest.mark.parametrize("action", [*CONSEQUENTIAL, *READING, NOTE], ids=lambda a: a.action.value)
def test_a_service_claiming_the_holders_identity_may_not_direct(action: Action) -> None:
    decision = decide_now(declared(), action, actor=ROBOT_ALICE)
    assert reason_of(decision) is RefusalReason.NOT_HUMAN
    assert isinstance(decision, Refused) and "alice" in decision.detail
    assert reason_of(decide_now(declared(), action)) is None  # the human alice may


def test_a_service_may_not_resume_hand_off_or_take_over() -> None:
    h = declared()
    h.hold()
    state = state_of(h)
    for event in (
        ev.new_event(
            ev.ResumeDirected,
            incident_id=h.incident_id,
            payload=ev.ResumeDirectedPayload(),
            actor=ROBOT_ALICE,
            producer="test",
        ),
        ev.new_event(
            ev.TakeoverRequested,
            incident_id=h.incident_id,
            payload=ev.TakeoverRequestedPayload(to_team="database-platform"),
            actor=ROBOT_ALICE,
            producer="test",
        ),
        ev.new_event(
            ev.TakeoverAccepted,
            incident_id=h.incident_id,
            payload=ev.TakeoverAcceptedPayload(team="database-platform", packet_sha256="a" * 64),
            actor=Actor(
                kind="service", id="dana", roles=(Role.SPECIALIST,), team="database-platform"
            ),
            producer="test",
        ),
    ):
        assert reason_of(check_control(state, event)) is RefusalReason.NOT_HUMAN, event


def test_the_fold_ignores_a_resume_from_a_service() -> None:
    h = declared()
    h.hold()
    h.resume(actor=ROBOT_ALICE)
    state = state_of(h)
    assert state.hold is not None
    assert state.ignored_controls == 1
    assert reason_of(decide_now(h, DRAIN)) is RefusalReason.ON_HOLD


def test_a_service_may_not_declare_an_authority() -> None:
    h = History().open()
    authority, digest = parse_authority(RUNBOOK.read_bytes(), holder="alice")
    event = ev.new_event(
        ev.AuthorityDeclared,
        incident_id=h.incident_id,
        payload=ev.AuthorityDeclaredPayload(
            authority=authority, source_file="x.yaml", content_sha256=digest
        ),
        actor=ROBOT_ALICE,
        producer="test",
    )
    assert reason_of(check_authority(state_of(h), event)) is RefusalReason.NOT_HUMAN
    h.events.append(event)
    state = state_of(h)
    assert state.authority is None and state.holder is None
    assert reason_of(decide_now(h, DRAIN)) is RefusalReason.NO_AUTHORITY


def test_a_service_may_declare_a_hold_and_it_stops_the_holder() -> None:
    # Stopping is always allowed, to Conn's own services too (invariant 7).
    h = declared()
    h.hold(actor=Actor.service("verifier"))
    assert reason_of(decide_now(h, DRAIN)) is RefusalReason.ON_HOLD
    assert decide_now(h, Verify()) == Accepted(consequential=False)


def test_a_specialist_not_holding_the_conn_may_not_direct() -> None:
    assert reason_of(decide_now(declared(), DRAIN, actor=DANA)) is RefusalReason.NOT_CONN_HOLDER


# --- every refusal path answers with its reason and says what is wrong ---------------------
# DESIGN.md: `decide(state, directive) -> accepted | refused(reason)`; the commander and
# the specialist read the detail. A path that crashes, answers without a reason or
# without naming its subject is a defect at 3 a.m.


def _control(h: History, cls: type, payload: object, actor: Actor) -> ev.Envelope:
    return ev.new_event(cls, incident_id=h.incident_id, payload=payload, actor=actor, producer="t")


def _refused(refusal: Refused | None, reason: RefusalReason, *names: str) -> None:
    assert isinstance(refusal, Refused), refusal
    assert refusal.reason is reason, refusal
    assert isinstance(refusal.detail, str) and refusal.detail
    for name in names:
        assert name in refusal.detail, (name, refusal.detail)


def _hold(h: History, actor: Actor) -> ev.Envelope:
    return _control(h, ev.HoldDeclared, ev.HoldDeclaredPayload(reason=HoldReason.MANUAL), actor)


def test_control_verbs_before_open_after_close_and_without_authority() -> None:
    h = History()
    _refused(check_control(state_of(h), _hold(h, ALICE)), RefusalReason.INCIDENT_NOT_OPEN, "inc-1")
    h.open()
    resume = _control(h, ev.ResumeDirected, ev.ResumeDirectedPayload(), ALICE)
    _refused(check_control(state_of(h), resume), RefusalReason.NO_AUTHORITY, "authority")
    h.declare()
    h.close()
    _refused(check_control(state_of(h), _hold(h, ALICE)), RefusalReason.INCIDENT_CLOSED, "inc-1")


def test_who_may_stop_an_incident() -> None:
    h = declared()
    state = state_of(h)
    for allowed in (ALICE, DANA, ROOT_ADMIN, Actor.service("verifier")):
        assert check_control(state, _hold(h, allowed)) is None, allowed
    _refused(check_control(state, _hold(h, OLIVE)), RefusalReason.ROLE_MAY_NOT_DIRECT, "olive")
    nobody = Actor(kind="human", id="nobody")
    _refused(check_control(state, _hold(h, nobody)), RefusalReason.ROLE_MAY_NOT_DIRECT, "nobody")


def test_only_the_holder_resumes_or_hands_off_and_only_to_a_declared_team() -> None:
    h = declared()
    h.hold()
    state = state_of(h)
    resume = _control(h, ev.ResumeDirected, ev.ResumeDirectedPayload(), MALLORY)
    _refused(check_control(state, resume), RefusalReason.NOT_CONN_HOLDER, "mallory", "alice")
    wrong_team = _control(
        h, ev.TakeoverRequested, ev.TakeoverRequestedPayload(to_team="payments"), ALICE
    )
    _refused(
        check_control(state, wrong_team),
        RefusalReason.TARGET_NOT_ALLOWED,
        "payments",
        "database-platform, rollback-authority",
    )


def _accept(h: History, sha: str, actor: Actor = DANA, team: str = "database-platform"):  # type: ignore[no-untyped-def]
    return _control(
        h, ev.TakeoverAccepted, ev.TakeoverAcceptedPayload(team=team, packet_sha256=sha), actor
    )


def test_a_takeover_is_accepted_only_by_the_addressed_team_naming_the_latest_packet() -> None:
    sha = "0123456789ab" + "c" * 52
    other = "fedcba987654" + "d" * 52
    h = declared()
    outsider = Actor(kind="human", id="sam", roles=(Role.SPECIALIST,), team="payments")
    _refused(
        check_control(state_of(h), _accept(h, sha, outsider, "payments")),
        RefusalReason.TARGET_NOT_ALLOWED,
        "payments",
    )
    h.packet(sha, team="rollback-authority")
    _refused(
        check_control(state_of(h), _accept(h, sha)),
        RefusalReason.TARGET_NOT_ALLOWED,
        "rollback-authority",
    )
    h.packet(sha, team="database-platform")
    assert check_control(state_of(h), _accept(h, sha)) is None
    _refused(
        check_control(state_of(h), _accept(h, other)),
        RefusalReason.STALE_BASE,
        f"packet {other[:12]} is not the latest ({sha[:12]})",
    )
    h.hold()  # the incident changed after the packet: a newer one is due
    _refused(
        check_control(state_of(h), _accept(h, sha)),
        RefusalReason.STALE_BASE,
        f"packet {sha[:12]} describes position",
    )


def test_recheck_refusal_paths_name_what_is_wrong() -> None:
    h = declared()
    _refused(recheck_(state_of(h), "nope", NO_CONTROL), RefusalReason.INVALID_BASE, "nope")
    early = History()
    cid = early.direct(DRAIN)
    _refused(recheck_(state_of(early), cid, NO_CONTROL), RefusalReason.INCIDENT_NOT_OPEN, "inc-1")
    # The roles that may direct narrow to specialists: the commander's queued step stops.
    h = declared()
    cid = h.direct(DRAIN)
    h.declare(
        content=RUNBOOK.read_bytes().replace(
            b"roles_may_direct: [commander, specialist]", b"roles_may_direct: [specialist]"
        )
    )
    _refused(
        recheck_(state_of(h), cid, NO_CONTROL),
        RefusalReason.ROLE_MAY_NOT_DIRECT,
        "roles [commander]",
    )


def test_recheck_refuses_a_second_step_while_one_is_open() -> None:
    h = declared()
    first = h.direct(DISABLE)
    h.accept(first, DISABLE)
    second = h.direct(DRAIN)
    _refused(recheck_(state_of(h), second, NO_CONTROL), RefusalReason.STEP_UNVERIFIED, first)
    assert recheck(h, first) is None


def test_recheck_keeps_a_reserved_target_reserved() -> None:
    h = declared()
    cid = h.direct(RestartDependencyTier(tier="orders-db", region="eu-west"))
    _refused(
        recheck_(state_of(h), cid, NO_CONTROL),
        RefusalReason.RESERVED_TO_TEAM,
        "database-platform",
        "replication",
    )


def test_roles_in_a_refusal_are_listed_or_none() -> None:
    _refused(
        decide_now(declared(), DRAIN, actor=OLIVE), RefusalReason.ROLE_MAY_NOT_DIRECT, "[observer]"
    )  # type: ignore[arg-type]
    roleless = Actor(kind="human", id="alice")
    _refused(
        decide_now(declared(), DRAIN, actor=roleless), RefusalReason.ROLE_MAY_NOT_DIRECT, "[none]"
    )  # type: ignore[arg-type]


def _payload(action: Action, expectation: object = None) -> ev.DirectiveIssuedPayload:
    return ev.DirectiveIssuedPayload(action=action, expectation=expectation, based_on_sequence=1)  # type: ignore[arg-type]


def test_observation_refusals_name_the_target() -> None:
    at = History().open().events[0].occurred_at
    _refused(
        check_observation(_payload(DISABLE), Observation()),
        RefusalReason.EXPECTATION_CONFLICT,
        "canary-10pct",
    )
    _refused(
        check_observation(_payload(DRAIN), Observation()),
        RefusalReason.EXPECTATION_CONFLICT,
        "cache-invalidation",
    )
    _refused(
        check_observation(_payload(RESTART), Observation()),
        RefusalReason.EXPECTATION_CONFLICT,
        "pricing-cache",
    )
    exp = WorkerPoolExpectation(pool="cache-invalidation", region="us-east", drained=False)
    _refused(
        check_observation(_payload(DRAIN, exp), Observation()),
        RefusalReason.EXPECTATION_CONFLICT,
        "could not be observed",
    )

    def pool(desired: int, ready: int, name: str = "cache-invalidation") -> Observation:
        return Observation(
            pools=(
                WorkerPoolState(
                    pool=name,
                    region="us-east",
                    desired_replicas=desired,
                    ready_replicas=ready,
                    observed_at=at,
                ),
            )
        )

    assert check_observation(_payload(DRAIN), pool(1, 1)) is None
    assert check_observation(_payload(DRAIN), pool(4, 4)) is None
    _refused(
        check_observation(_payload(DRAIN), pool(0, 0)), RefusalReason.PARTIAL_STATE, "desired 0"
    )
    _refused(check_observation(_payload(DRAIN), pool(4, 3)), RefusalReason.PARTIAL_STATE, "ready 3")
    # Another pool's state says nothing about this one.
    _refused(
        check_observation(_payload(DRAIN), pool(4, 4, "checkout-workers")),
        RefusalReason.EXPECTATION_CONFLICT,
    )
    # What the commander expects of the pool and tier, matched or not.
    assert check_observation(_payload(DRAIN, exp), pool(4, 4)) is None
    drained = WorkerPoolExpectation(pool="cache-invalidation", region="us-east", drained=True)
    _refused(
        check_observation(_payload(DRAIN, drained), pool(4, 4)),
        RefusalReason.EXPECTATION_CONFLICT,
        "desired 4, ready 4",
    )
    other_pool = WorkerPoolExpectation(pool="checkout-workers", region="us-east", drained=False)
    _refused(
        check_observation(_payload(DRAIN, other_pool), pool(4, 4)),
        RefusalReason.EXPECTATION_CONFLICT,
        "could not be observed",
    )

    def tier(healthy: bool, name: str = "pricing-cache") -> Observation:
        return Observation(
            tiers=(
                TierState(
                    tier=name, region="us-east", healthy=healthy, generation=1, observed_at=at
                ),
            )
        )

    sick = TierExpectation(tier="pricing-cache", region="us-east", healthy=False)
    assert check_observation(_payload(RESTART, sick), tier(False)) is None
    _refused(
        check_observation(_payload(RESTART, sick), tier(True)),
        RefusalReason.EXPECTATION_CONFLICT,
        "observed healthy",
    )
    _refused(
        check_observation(_payload(RESTART, sick), tier(False, "inventory-api")),
        RefusalReason.EXPECTATION_CONFLICT,
        "could not be observed",
    )


def test_authority_record_refusal_paths() -> None:
    h = History()
    authority, digest = parse_authority(RUNBOOK.read_bytes(), holder="alice")
    declare = _control(
        h,
        ev.AuthorityDeclared,
        ev.AuthorityDeclaredPayload(
            authority=authority, source_file="r.yaml", content_sha256=digest
        ),
        ALICE,
    )
    _refused(check_authority(state_of(h), declare), RefusalReason.INCIDENT_NOT_OPEN, "inc-1")
    h.open()

    def propose(content: bytes, pid: str = "p-9", base: str | None = None) -> ev.Envelope:
        wider, sha = parse_authority(content, holder="alice")
        state = state_of(h)
        return _control(
            h,
            ev.AuthorityChangeProposed,
            ev.AuthorityChangeProposedPayload(
                proposal_id=pid,
                authority=wider,
                source_file="w.yaml",
                content_sha256=sha,
                base_sha256=base or state.authority_sha256 or "0" * 64,
                widenings=("x",),
            ),
            ALICE,
        )

    more = limited(12)
    _refused(check_authority(state_of(h), propose(more)), RefusalReason.NO_AUTHORITY, "declare")
    h.declare()
    assert check_authority(state_of(h), propose(more)) is None
    _refused(
        check_authority(state_of(h), propose(more, base="1" * 64)),
        RefusalReason.STALE_BASE,
        "changed",
    )
    _refused(
        check_authority(state_of(h), propose(limited(5))),
        RefusalReason.INVALID_DIRECTIVE,
        "does not widen",
    )
    h.events.append(propose(more, pid="p-1"))
    _refused(check_authority(state_of(h), propose(more, pid="p-1")), RefusalReason.DUPLICATE, "p-1")


def test_a_widening_lists_the_first_five_changes_and_counts_the_rest() -> None:
    h = declared()
    content = RUNBOOK.read_bytes()
    for old, new in (
        (b"max_drained_pools_per_region: 1", b"max_drained_pools_per_region: 2"),
        (b"max_restarts_per_tier_region: 1", b"max_restarts_per_tier_region: 2"),
        (b"max_consequential_steps: 10", b"max_consequential_steps: 11"),
        (b"regions: [us-east, eu-west]", b"regions: [us-east, eu-west, ap-south, sa-east]"),
        (
            b"[database-platform, rollback-authority]",
            b"[database-platform, rollback-authority, payments]",
        ),
    ):
        assert old in content
        content = content.replace(old, new)
    authority, digest = parse_authority(content, holder="alice")
    from conn_core.authority import widenings

    wider = widenings(state_of(h).authority, authority)  # type: ignore[arg-type]
    assert len(wider) > 6
    event = _control(
        h,
        ev.AuthorityDeclared,
        ev.AuthorityDeclaredPayload(
            authority=authority, source_file="w.yaml", content_sha256=digest
        ),
        ALICE,
    )
    refusal = check_authority(state_of(h), event)
    _refused(refusal, RefusalReason.AUTHORITY_WIDENING, f"; and {len(wider) - 5} more")
    assert refusal is not None
    assert wider[4] in refusal.detail and wider[5] not in refusal.detail


# --- two people for a wider boundary (invariant 4): every refusal names its reason -------

WIDER_12 = limited(12)


def _approval(h: History, pid: str, sha: str, actor: Actor) -> ev.Envelope:
    return _control(
        h,
        ev.AuthorityChangeApproved,
        ev.AuthorityChangeApprovedPayload(proposal_id=pid, content_sha256=sha),
        actor,
    )


def _approved_declaration(
    h: History, pid: str, actor: Actor, content: bytes = WIDER_12
) -> ev.Envelope:
    authority, sha = parse_authority(content, holder="alice")
    return _control(
        h,
        ev.AuthorityDeclared,
        ev.AuthorityDeclaredPayload(
            authority=authority, source_file="w.yaml", content_sha256=sha, approval=pid
        ),
        actor,
    )


def test_approval_refusals_name_their_reason() -> None:
    h = declared()
    sha = h.propose(WIDER_12)
    state = state_of(h)
    _refused(
        check_authority(state, _approval(h, "p-404", sha, ROOT_ADMIN)),
        RefusalReason.INVALID_BASE,
        "p-404",
    )
    _refused(
        check_authority(state, _approval(h, "p-1", "0" * 64, ROOT_ADMIN)),
        RefusalReason.INVALID_BASE,
        "different content",
    )
    _refused(
        check_authority(state, _approval(h, "p-1", sha, DANA)),
        RefusalReason.ROLE_MAY_NOT_DIRECT,
        "dana",
    )
    _refused(
        check_authority(state, _approval(h, "p-1", sha, ALICE)),
        RefusalReason.AUTHORITY_WIDENING,
        "alice",
    )
    assert check_authority(state, _approval(h, "p-1", sha, CAROL)) is None
    # The applying declaration before approval, by someone else, or twice.
    _refused(
        check_authority(state, _approved_declaration(h, "p-404", CAROL)),
        RefusalReason.INVALID_BASE,
        "p-404",
    )
    _refused(
        check_authority(state, _approved_declaration(h, "p-1", CAROL)),
        RefusalReason.AUTHORITY_WIDENING,
        "not approved",
    )
    h.approve("p-1", sha, CAROL)
    state = state_of(h)
    _refused(
        check_authority(state, _approval(h, "p-1", sha, ROOT_ADMIN)),
        RefusalReason.DUPLICATE,
        "carol",
    )
    _refused(
        check_authority(state, _approved_declaration(h, "p-1", ROOT_ADMIN)),
        RefusalReason.AUTHORITY_WIDENING,
        "only the approver (carol)",
    )
    _refused(
        check_authority(state, _approved_declaration(h, "p-1", CAROL, limited(13))),
        RefusalReason.INVALID_BASE,
        "not the approved content",
    )
    assert check_authority(state, _approved_declaration(h, "p-1", CAROL)) is None
    h.events.append(_approved_declaration(h, "p-1", CAROL))
    state = state_of(h)
    assert state.authority is not None
    assert state.authority.blast_radius.max_consequential_steps == 12
    _refused(
        check_authority(state, _approved_declaration(h, "p-1", CAROL)),
        RefusalReason.DUPLICATE,
        "p-1",
    )


def test_an_approval_lapses_when_the_authority_or_the_conn_moves() -> None:
    h = declared()
    sha = h.propose(WIDER_12)
    h.declare(content=limited(9))  # the holder narrows: the proposal's base is gone
    _refused(
        check_authority(state_of(h), _approval(h, "p-1", sha, CAROL)),
        RefusalReason.STALE_BASE,
        "changed since the proposal",
    )
    h2 = declared()
    sha2 = h2.propose(WIDER_12)
    h2.approve("p-1", sha2, CAROL)
    h2.request_takeover()
    packet = h2.packet()
    h2.take_over(packet)  # dana holds the conn now
    state = state_of(h2)
    assert state.holder is not None and state.holder.identity == "dana"
    _refused(
        check_authority(state, _approved_declaration(h2, "p-1", CAROL)),
        RefusalReason.NOT_CONN_HOLDER,
        "conn moved",
    )
    h3 = declared()
    sha3 = h3.propose(WIDER_12)
    h3.request_takeover()
    h3.take_over(h3.packet())
    _refused(
        check_authority(state_of(h3), _approval(h3, "p-1", sha3, CAROL)),
        RefusalReason.NOT_CONN_HOLDER,
        "conn moved",
    )
    h4 = declared()
    sha4 = h4.propose(WIDER_12)
    h4.approve("p-1", sha4, CAROL)
    h4.declare(content=limited(9))
    _refused(
        check_authority(state_of(h4), _approved_declaration(h4, "p-1", CAROL)),
        RefusalReason.STALE_BASE,
        "changed since the proposal",
    )


# --- the rest of the refusal paths: a reason and a detail naming the subject ---------------


def test_decide_refusals_say_what_is_wrong() -> None:
    _refused(decide_now(History(), DRAIN), RefusalReason.INCIDENT_NOT_OPEN, "inc-1")  # type: ignore[arg-type]
    closed = declared()
    closed.close()
    _refused(decide_now(closed, DRAIN), RefusalReason.INCIDENT_CLOSED, "inc-1")  # type: ignore[arg-type]
    _refused(decide_now(History().open(), DRAIN), RefusalReason.NO_AUTHORITY, "authority")  # type: ignore[arg-type]
    h = declared()
    _refused(decide_now(h, DRAIN, actor=MALLORY), RefusalReason.NOT_CONN_HOLDER, "mallory", "alice")  # type: ignore[arg-type]
    _refused(decide_now(h, DRAIN, based_on=99), RefusalReason.INVALID_BASE, "99", str(h.position))  # type: ignore[arg-type]
    tiny = RUNBOOK.read_bytes().replace(b"  - action: verify\n", b"")
    _refused(
        decide_now(declared(tiny), Verify()),
        RefusalReason.ACTION_NOT_ALLOWED,
        "verify",
        "checkout-outage@",
    )  # type: ignore[arg-type]
    other = DrainWorkerPool(pool="payments", region="us-east")
    _refused(decide_now(h, other), RefusalReason.TARGET_NOT_ALLOWED, "payments")  # type: ignore[arg-type]
    h.hold()
    _refused(decide_now(h, DRAIN), RefusalReason.ON_HOLD, "manual")  # type: ignore[arg-type]
    h2 = declared()
    first = h2.direct(DISABLE)
    h2.accept(first, DISABLE)
    _refused(decide_now(h2, DRAIN), RefusalReason.STEP_UNVERIFIED, first)  # type: ignore[arg-type]


def test_blast_radius_refusals_name_the_pools_and_the_tier() -> None:
    h = declared()
    verified_step(h, DRAIN)
    second = DrainWorkerPool(pool="checkout-workers", region="us-east")
    _refused(decide_now(h, second), RefusalReason.BLAST_RADIUS, "cache-invalidation", "us-east")  # type: ignore[arg-type]
    verified_step(h, RESTART)
    _refused(decide_now(h, RESTART), RefusalReason.BLAST_RADIUS, "pricing-cache", "restarted 1")  # type: ignore[arg-type]


def test_its_own_start_is_subtracted_once_not_twice() -> None:
    # Two steps allowed; the second has started when the limit narrows to one: the
    # first step alone reaches the new limit, so the second must not run.
    h = declared(limited(2))
    verified_step(h, DISABLE)
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN, executor_id="x1")
    assert recheck(h, cid) is None
    h.declare(content=limited(1))
    assert recheck(h, cid) is RefusalReason.BLAST_RADIUS


def test_recheck_refusals_say_what_is_wrong() -> None:
    h = declared()
    cid = h.direct(DRAIN)
    h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)
    _refused(recheck_(state_of(h), cid, NO_CONTROL), RefusalReason.DUPLICATE, cid, "refused")
    h = declared()
    cid = h.direct(DRAIN)
    _refused(recheck_(state_of(h), cid, kill_switch()), RefusalReason.KILL_SWITCH, "drill")
    h.hold()
    _refused(recheck_(state_of(h), cid, NO_CONTROL), RefusalReason.ON_HOLD, "manual")
    h.close()
    _refused(recheck_(state_of(h), cid, NO_CONTROL), RefusalReason.INCIDENT_CLOSED, "inc-1")
    h = declared()
    cid = h.direct(DRAIN)
    h.gather(None, purpose="directed")
    _refused(
        recheck_(state_of(h), cid, NO_CONTROL), RefusalReason.STALE_BASE, "StateGathered", "re-read"
    )
    h = declared()
    cid = h.direct(DRAIN)
    h.request_takeover()
    h.take_over(h.packet())
    _refused(
        recheck_(state_of(h), cid, NO_CONTROL), RefusalReason.NOT_CONN_HOLDER, "alice", "dana does"
    )


def test_control_refusals_say_what_is_wrong() -> None:
    h = declared()
    state = state_of(h)
    resume = _control(h, ev.ResumeDirected, ev.ResumeDirectedPayload(), ROBOT_ALICE)
    _refused(check_control(state, resume), RefusalReason.NOT_HUMAN, "alice")
    resume = _control(h, ev.ResumeDirected, ev.ResumeDirectedPayload(), ALICE)
    _refused(check_control(state, resume), RefusalReason.DUPLICATE, "not on hold")
    _refused(
        check_control(state, _accept(h, "a" * 64)), RefusalReason.INVALID_BASE, "no takeover packet"
    )
    _refused(
        check_control(state, _accept(h, "a" * 64, actor=MALLORY)),
        RefusalReason.ROLE_MAY_NOT_DIRECT,
        "mallory",
        "database-platform",
    )
    h.request_takeover(team="rollback-authority")
    rollback = Actor(kind="human", id="rob", roles=(Role.SPECIALIST,), team="database-platform")
    _refused(
        check_control(state_of(h), _accept(h, "a" * 64, actor=rollback)),
        RefusalReason.TARGET_NOT_ALLOWED,
        "rollback-authority",
    )


def test_authority_declaration_refusals_say_what_is_wrong() -> None:
    h = declared()
    authority, digest = parse_authority(limited(5), holder="alice")

    def declaration(actor: Actor) -> ev.Envelope:
        return _control(
            h,
            ev.AuthorityDeclared,
            ev.AuthorityDeclaredPayload(
                authority=authority, source_file="n.yaml", content_sha256=digest
            ),
            actor,
        )

    _refused(
        check_authority(state_of(h), declaration(ROBOT_ALICE)), RefusalReason.NOT_HUMAN, "alice"
    )
    _refused(
        check_authority(state_of(h), declaration(DANA)), RefusalReason.ROLE_MAY_NOT_DIRECT, "dana"
    )
    _refused(
        check_authority(state_of(h), declaration(MALLORY)),
        RefusalReason.NOT_CONN_HOLDER,
        "mallory",
        "alice does",
    )
    h.close()
    _refused(
        check_authority(state_of(h), declaration(ALICE)), RefusalReason.INCIDENT_CLOSED, "inc-1"
    )


def test_observation_refusals_for_a_target_already_changed_name_it() -> None:
    at = History().open().events[0].occurred_at
    from conn_schemas.observations import FlagRuleState

    flags = Observation(
        flags=(
            FlagRuleState(
                flag="checkout-pricing",
                rule="canary-10pct",
                region="eu-west",
                enabled=False,
                observed_at=at,
            ),
        )
    )
    _refused(
        check_observation(_payload(DISABLE), flags),
        RefusalReason.PARTIAL_STATE,
        "canary-10pct",
        "already disabled",
    )
    tiers = Observation(
        tiers=(
            TierState(
                tier="pricing-cache",
                region="us-east",
                healthy=False,
                generation=2,
                restarting=True,
                observed_at=at,
            ),
        )
    )
    _refused(
        check_observation(_payload(RESTART), tiers),
        RefusalReason.PARTIAL_STATE,
        "pricing-cache",
        "already restarting",
    )


def test_a_widening_of_exactly_five_changes_lists_them_all() -> None:
    h = declared()
    content = RUNBOOK.read_bytes()
    for old, new in (
        (b"max_drained_pools_per_region: 1", b"max_drained_pools_per_region: 2"),
        (b"max_restarts_per_tier_region: 1", b"max_restarts_per_tier_region: 2"),
        (b"max_consequential_steps: 10", b"max_consequential_steps: 11"),
        (
            b"[database-platform, rollback-authority]",
            b"[database-platform, rollback-authority, payments, sre]",
        ),
    ):
        content = content.replace(old, new)
    authority, digest = parse_authority(content, holder="alice")
    from conn_core.authority import widenings

    wider = widenings(state_of(h).authority, authority)  # type: ignore[arg-type]
    assert len(wider) == 5, wider
    event = _control(
        h,
        ev.AuthorityDeclared,
        ev.AuthorityDeclaredPayload(
            authority=authority, source_file="w.yaml", content_sha256=digest
        ),
        ALICE,
    )
    refusal = check_authority(state_of(h), event)
    _refused(refusal, RefusalReason.AUTHORITY_WIDENING, wider[4])
    assert refusal is not None and "more" not in refusal.detail
    six = content.replace(
        b"roles_may_direct: [commander, specialist]",
        b"roles_may_direct: [commander, specialist, admin]",
    )
    authority6, digest6 = parse_authority(six, holder="alice")
    event6 = _control(
        h,
        ev.AuthorityDeclared,
        ev.AuthorityDeclaredPayload(
            authority=authority6, source_file="w.yaml", content_sha256=digest6
        ),
        ALICE,
    )
    _refused(check_authority(state_of(h), event6), RefusalReason.AUTHORITY_WIDENING, "; and 1 more")


def test_a_reserved_targets_own_start_does_not_count_against_it() -> None:
    # The database team holds the conn and restarts orders-db (reserved to it): its own
    # StepStarted must not use up the one restart allowed (invariant 4, re-checked).
    h = declared()
    h.request_takeover()
    h.take_over(h.packet())
    db = RestartDependencyTier(tier="orders-db", region="eu-west")
    cid = h.direct(db, actor=DANA)
    h.accept(cid, db)
    h.start(cid, db, executor_id="x1")
    assert recheck(h, cid) is None
