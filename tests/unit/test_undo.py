"""Recorded undo (issue 19): the inverse of each consequential step, computed from the
state before it, kept by the fold, and turned into the undo directive; plus the checks
that keep an undo bounded (authority, a second undo, the contract stays readable).

Oracles (DESIGN.md, issue 19): the undo restores the previous state (the rule's previous
state, the pool's previous size); a restart has no inverse; an undo is a bounded
directive subject to the same authority; no data is never a guess."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from builders import ALICE, RUNBOOK, History
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from conn_core import approvals
from conn_core.fold import fold
from conn_core.rules import Accepted, Refused, check_observation, decide
from conn_core.state import ControlState
from conn_core.undo import NoUndo, undo_action, undo_for
from conn_schemas import events as ev
from conn_schemas.observations import FlagRuleState, Observation, TierState, WorkerPoolState
from conn_schemas.undo import RecordedUndo
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    RefusalReason,
    RestartDependencyTier,
    ScaleWorkerPool,
    Verdict,
)

NOW = datetime(2026, 12, 4, tzinfo=UTC)
DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
ENABLE = EnableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")


def rule(enabled: bool, region: str = "eu-west") -> FlagRuleState:
    return FlagRuleState(
        flag="checkout-pricing",
        rule="canary-10pct",
        region=region,
        enabled=enabled,
        observed_at=NOW,
    )


def pool(
    desired: int, ready: int | None = None, name: str = "cache-invalidation"
) -> WorkerPoolState:
    return WorkerPoolState(
        pool=name,
        region="us-east",
        desired_replicas=desired,
        ready_replicas=desired if ready is None else ready,
        observed_at=NOW,
    )


def tier(generation: int) -> TierState:
    return TierState(
        tier="pricing-cache", region="us-east", healthy=True, generation=generation, observed_at=NOW
    )


# --- the inverse ------------------------------------------------------------------


def test_disabling_an_enabled_rule_is_undone_by_enabling_it() -> None:
    undo = undo_for(DISABLE, rule(enabled=True))
    assert undo is not None and undo.reversible and undo.previous_enabled is True
    assert undo.inverse == ENABLE


def test_enabling_a_disabled_rule_is_undone_by_disabling_it() -> None:
    undo = undo_for(ENABLE, rule(enabled=False))
    assert undo is not None and undo.inverse == DISABLE


@given(st.integers(min_value=1, max_value=1000))
def test_a_drain_is_undone_by_scaling_back_to_the_size_before(size: int) -> None:
    undo = undo_for(DRAIN, pool(size))
    assert undo is not None and undo.reversible and undo.previous_replicas == size
    assert undo.inverse == ScaleWorkerPool(pool=DRAIN.pool, region=DRAIN.region, replicas=size)


def test_a_scale_back_from_zero_is_undone_by_a_drain() -> None:
    scale = ScaleWorkerPool(pool=DRAIN.pool, region=DRAIN.region, replicas=4)
    undo = undo_for(scale, pool(0))
    assert undo is not None and undo.inverse == DRAIN


def test_a_restart_is_irreversible_and_records_the_generation_before() -> None:
    undo = undo_for(RESTART, tier(3))
    assert undo is not None and not undo.reversible and undo.inverse is None
    assert undo.previous_generation == 3 and "no inverse" in undo.detail


@pytest.mark.parametrize(
    ("action", "before"),
    [
        (DISABLE, None),
        (DISABLE, rule(enabled=True, region="us-east")),  # another target's state
        (DISABLE, pool(3)),
        (DRAIN, None),
        (DRAIN, pool(3, name="checkout-workers")),
        (DRAIN, rule(enabled=True)),
    ],
)
def test_no_readable_state_before_means_no_undo_never_a_guess(
    action: object, before: object
) -> None:
    undo = undo_for(action, before)  # type: ignore[arg-type]
    assert undo is not None and not undo.reversible and undo.inverse is None


def test_every_consequential_action_gets_a_recorded_undo() -> None:
    samples = {
        DISABLE: rule(True),
        ENABLE: rule(False),
        DRAIN: pool(3),
        ScaleWorkerPool(pool=DRAIN.pool, region=DRAIN.region, replicas=2): pool(0),
        RESTART: tier(0),
    }
    assert {a.action for a in samples} == CONSEQUENTIAL_ACTIONS
    for action, before in samples.items():
        assert undo_for(action, before) is not None


def test_an_undo_is_reversible_exactly_when_it_names_an_inverse() -> None:
    with pytest.raises(ValidationError):
        RecordedUndo(reversible=True, previous="x")
    with pytest.raises(ValidationError):
        RecordedUndo(reversible=False, inverse=ENABLE, previous="x")


@pytest.mark.parametrize("replicas", [0, -1, 1001])
def test_a_scale_is_bounded_and_never_a_hidden_drain(replicas: int) -> None:
    with pytest.raises(ValidationError):
        ScaleWorkerPool(pool="p", region="r", replicas=replicas)


# --- the contract stays readable ----------------------------------------------------


def test_a_step_started_written_before_undo_existed_still_reads() -> None:
    h = History().open()
    h.start("d-1", DRAIN)
    raw = h.events[-1].model_dump(mode="json")
    del raw["payload"]["undo"]
    event = ev.StepStarted.model_validate(raw)
    assert event.payload.undo is None and event.schema_version == 1


# --- the fold and the undo directive ----------------------------------------------------


def _ran(
    action: object, undo: RecordedUndo | None, *, finish: str = "succeed"
) -> tuple[History, str]:
    h = History().open().declare()
    cid = h.direct(action)  # type: ignore[arg-type]
    h.accept(cid, action)  # type: ignore[arg-type]
    h._add(
        ev.StepStarted,
        ev.StepStartedPayload(
            action=action, idempotency_key=cid, executor_id="x1", fencing_token=1, undo=undo
        ),
        h.events[-1].actor,
        cid,
    )
    getattr(h, finish)(cid, action)
    return h, cid


def test_the_fold_keeps_the_recorded_undo_and_it_becomes_the_undo_directive() -> None:
    h, cid = _ran(DRAIN, undo_for(DRAIN, pool(6)))
    state = fold(h.events, h.incident_id)
    assert state.directives[cid].undo is not None
    assert undo_action(state, cid) == ScaleWorkerPool(
        pool=DRAIN.pool, region=DRAIN.region, replicas=6
    )


def test_an_unknown_outcome_can_be_undone_too() -> None:
    h, cid = _ran(DISABLE, undo_for(DISABLE, rule(True)), finish="unknown")
    assert undo_action(fold(h.events, h.incident_id), cid) == ENABLE


@pytest.mark.parametrize(
    ("action", "undo", "finish", "code"),
    [
        (RESTART, undo_for(RESTART, tier(2)), "succeed", "irreversible"),
        (DRAIN, None, "succeed", "no_undo"),  # recorded before undo existed
        (DRAIN, undo_for(DRAIN, pool(6)), "fail", "no_undo"),  # failed: nothing ran
    ],
)
def test_no_undo_is_issued_for_what_cannot_or_need_not_be_undone(
    action: object, undo: RecordedUndo | None, finish: str, code: str
) -> None:
    h, cid = _ran(action, undo, finish=finish)
    answer = undo_action(fold(h.events, h.incident_id), cid)
    assert isinstance(answer, NoUndo) and answer.code == code


def test_an_unknown_step_has_no_undo() -> None:
    h = History().open().declare()
    answer = undo_action(fold(h.events, h.incident_id), "nope")
    assert isinstance(answer, NoUndo) and answer.code == "not_found"


def test_a_scale_back_no_longer_counts_the_pool_as_drained() -> None:
    h, cid = _ran(DRAIN, undo_for(DRAIN, pool(6)))
    assert DRAIN.pool in fold(h.events, h.incident_id).drained_pools["us-east"]
    scale = ScaleWorkerPool(pool=DRAIN.pool, region=DRAIN.region, replicas=6)
    h.snapshot(cid, Verdict.RECOVERED)
    cid2 = h.direct(scale)
    h.accept(cid2, scale)
    h.start(cid2, scale)
    assert DRAIN.pool not in fold(h.events, h.incident_id).drained_pools.get("us-east", set())


# --- an undo is a bounded directive like any other ------------------------------------


def test_the_inverse_needs_its_own_grant_in_the_authority() -> None:
    narrow = (
        b"name: n\nversion: '1'\nholder: {identity: alice}\nregions: [us-east, eu-west]\n"
        b"allowed:\n  - action: disable_flag_rule\n    targets: [checkout-pricing/canary-10pct]\n"
    )
    h = History().open().declare(content=narrow)
    state = fold(h.events, h.incident_id)
    payload = ev.DirectiveIssuedPayload(action=ENABLE, based_on_sequence=state.sequence)
    decision = decide(state, payload, ALICE, ControlState())
    assert isinstance(decision, Refused) and decision.reason is RefusalReason.ACTION_NOT_ALLOWED
    granted = History().open().declare()  # the checkout runbook grants the inverses
    state = fold(granted.events, granted.incident_id)
    payload = ev.DirectiveIssuedPayload(action=ENABLE, based_on_sequence=state.sequence)
    assert decide(state, payload, ALICE, ControlState()) == Accepted(consequential=True)


def test_a_second_undo_is_refused_before_acting() -> None:
    enabled = Observation(flags=(rule(True),))
    refusal = check_observation(
        ev.DirectiveIssuedPayload(action=ENABLE, based_on_sequence=0), enabled
    )
    assert isinstance(refusal, Refused) and refusal.reason is RefusalReason.PARTIAL_STATE
    scale = ScaleWorkerPool(pool=DRAIN.pool, region=DRAIN.region, replicas=6)
    at_size = Observation(pools=(pool(6),))
    refusal = check_observation(
        ev.DirectiveIssuedPayload(action=scale, based_on_sequence=0), at_size
    )
    assert isinstance(refusal, Refused) and "already at 6" in refusal.detail
    mid = Observation(pools=(pool(6, ready=2),))
    refusal = check_observation(ev.DirectiveIssuedPayload(action=scale, based_on_sequence=0), mid)
    assert isinstance(refusal, Refused) and "mid-change" in refusal.detail
    drained = Observation(pools=(pool(0),), flags=(rule(False),))
    assert (
        check_observation(ev.DirectiveIssuedPayload(action=scale, based_on_sequence=0), drained)
        is None
    )
    assert (
        check_observation(ev.DirectiveIssuedPayload(action=ENABLE, based_on_sequence=0), drained)
        is None
    )


def test_an_undo_already_directed_is_not_issued_twice() -> None:
    h, cid = _ran(DRAIN, undo_for(DRAIN, pool(6)))
    h.snapshot(cid, Verdict.RECOVERED)
    inverse = undo_action(fold(h.events, h.incident_id), cid)
    assert isinstance(inverse, ScaleWorkerPool)
    refused = h.direct(inverse)
    h.refuse(refused, inverse, RefusalReason.STEP_UNVERIFIED)
    assert undo_action(fold(h.events, h.incident_id), cid) == inverse  # refused: may retry
    h.direct(inverse)
    answer = undo_action(fold(h.events, h.incident_id), cid)
    assert isinstance(answer, NoUndo) and answer.code == "already_undone"


def test_an_undo_waits_for_approvers_when_its_inverse_needs_them() -> None:
    """Issue 19 item 3: the undo is subject to the same approvals as any directive."""
    text = RUNBOOK.read_text()
    rule = "approvals:\n  - action: scale_worker_pool\n    count: 1\n    roles: [specialist]\n"
    h = History().open().declare(content=text.replace("\napprovals:\n", "\n" + rule, 1).encode())
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h._add(
        ev.StepStarted,
        ev.StepStartedPayload(
            action=DRAIN,
            idempotency_key=cid,
            executor_id="x1",
            fencing_token=1,
            undo=undo_for(DRAIN, pool(6)),
        ),
        h.events[-1].actor,
        cid,
    )
    h.succeed(cid, DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    inverse = undo_action(fold(h.events, h.incident_id), cid)
    assert isinstance(inverse, ScaleWorkerPool)
    undo = h.direct(inverse)  # what `conn direct undo` issues
    state = fold(h.events, h.incident_id)
    assert undo in approvals.awaiting(state)
    refusal = approvals.gate(state, undo)
    assert refusal is not None and refusal.reason is RefusalReason.APPROVAL_REQUIRED
    packet = approvals.decision_packet(state, undo)
    assert packet is not None and packet.action == inverse
