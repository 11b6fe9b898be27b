"""The fold under contradicting executor records (invariant 2, "fencing all the way").

A fenced-out executor can still append: a late decision, a late outcome. The fold
must resolve them deterministically (the first decision and the first outcome
stand) and must never hide an executed step: a StepStarted always shows the step
as started, even after a refusal.
"""

from __future__ import annotations

from builders import History
from hypothesis import given, settings
from hypothesis import strategies as st

from conn_core.fold import fold
from conn_core.state import DirectiveStatus
from conn_schemas import events as ev
from conn_schemas.observations import Observation, TierState
from conn_schemas.values import (
    DrainWorkerPool,
    HoldReason,
    RefusalReason,
    RestartDependencyTier,
)

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")


def ready() -> History:
    return History().open().declare()


def test_a_step_started_after_a_refusal_shows_as_started() -> None:
    h = ready()
    cid = h.direct(DRAIN)
    h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)  # a fenced-out executor's refusal
    h.accept(cid, DRAIN)  # the owner's acceptance: the first decision stands...
    assert fold(h.events, h.incident_id).directives[cid].status is DirectiveStatus.REFUSED
    h.start(cid, DRAIN, executor_id="owner")  # ...but an executed step is never hidden
    state = fold(h.events, h.incident_id)
    record = state.directives[cid]
    assert record.status is DirectiveStatus.STARTED and record.started_by == "owner"
    assert state.open_step == cid and state.consequential_steps == 1
    assert [d.correlation_id for d in state.unverified_changes()] == [cid]
    assert state.conflicting_records == 2
    h.succeed(cid, DRAIN)
    assert fold(h.events, h.incident_id).directives[cid].status is DirectiveStatus.SUCCEEDED


def test_a_late_outcome_after_outcome_unknown_changes_nothing() -> None:
    h = ready()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.unknown(cid, DRAIN)  # the new owner reported it unknown
    before = fold(h.events, h.incident_id)
    h.succeed(cid, DRAIN)  # the zombie's late finish
    h.fail(cid, DRAIN)
    after = fold(h.events, h.incident_id)
    assert after.directives[cid].status is DirectiveStatus.OUTCOME_UNKNOWN
    assert after.directives[cid].result is None
    assert after.hold == before.hold and after.open_step == before.open_step
    assert after.conflicting_records == before.conflicting_records + 2
    assert [d.correlation_id for d in after.unverified_changes()] == [cid]


def test_a_second_start_by_another_executor_changes_nothing() -> None:
    h = ready()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN, executor_id="a")
    h.start(cid, DRAIN, executor_id="b")
    state = fold(h.events, h.incident_id)
    assert state.directives[cid].started_by == "a" and state.consequential_steps == 1


def test_failed_at_the_last_gate_holds_nothing_and_leaves_nothing_to_verify() -> None:
    h = ready()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.fail_not_started(cid, DRAIN, "the incident was closed after this directive")
    state = fold(h.events, h.incident_id)
    record = state.directives[cid]
    assert record.status is DirectiveStatus.FAILED and record.not_started
    assert state.hold is None and state.open_step is None
    assert state.unverified_changes() == []
    # A StepStarted landing after the gate said "never started" does not revive it.
    h.start(cid, DRAIN, executor_id="zombie")
    assert fold(h.events, h.incident_id).directives[cid].status is DirectiveStatus.FAILED


def test_a_failed_step_still_holds() -> None:
    h = ready()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.fail(cid, DRAIN)
    state = fold(h.events, h.incident_id)
    assert state.hold is not None and state.hold.reason is HoldReason.STEP_FAILED


def test_the_pre_step_state_is_kept_for_verifying_an_unknown_outcome() -> None:
    h = ready()
    cid = h.direct(RESTART)
    tier = TierState(
        tier="pricing-cache",
        region="us-east",
        healthy=False,
        generation=4,
        observed_at=h.events[0].occurred_at,
    )
    h.gather(cid, observation=Observation(tiers=(tier,)))
    h.gather(cid, observation=Observation())  # a later one does not replace it
    h.accept(cid, RESTART)
    h.start(cid, RESTART)
    h.unknown(cid, RESTART)
    record = fold(h.events, h.incident_id).directives[cid]
    assert record.pre_step is not None and record.pre_step.tiers[0].generation == 4


def test_an_older_packet_published_late_does_not_replace_a_newer_one() -> None:
    h = ready()
    h.hold()
    h.packet("b" * 64, None, basis=h.position)
    h.packet("a" * 64, None, basis=2)
    assert fold(h.events, h.incident_id).last_packet.sha256 == "b" * 64  # type: ignore[union-attr]


RECORDS = st.sampled_from(["accept", "refuse", "start_a", "start_b", "ok", "fail", "unknown"])


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORDS, max_size=8))
def test_any_interleaving_is_deterministic_and_never_hides_a_start(records: list[str]) -> None:
    h = ready()
    cid = h.direct(DRAIN)
    for name in records:
        if name == "accept":
            h.accept(cid, DRAIN)
        elif name == "refuse":
            h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)
        elif name.startswith("start"):
            h.start(cid, DRAIN, executor_id=name[-1])
        elif name == "ok":
            h.succeed(cid, DRAIN)
        elif name == "fail":
            h.fail(cid, DRAIN)
        else:
            h.unknown(cid, DRAIN)
    state = fold(h.events, h.incident_id)
    again = fold(list(h.events), h.incident_id)
    assert state == again
    record = state.directives[cid]
    # Oracle: the first StepStarted, if any came before the first outcome, shows.
    first_start = next((i for i, n in enumerate(records) if n.startswith("start")), None)
    outcome_kinds = ("ok", "fail", "unknown")
    if first_start is not None and not any(n in outcome_kinds for n in records[:first_start]):
        assert record.status is not DirectiveStatus.REFUSED, records
        assert record.status is not DirectiveStatus.ISSUED
        assert record.status is not DirectiveStatus.ACCEPTED
        assert record.started_by == records[first_start][-1]
        assert state.consequential_steps == 1
        later = [n for n in records[first_start:] if n in outcome_kinds]
        expected = {
            None: DirectiveStatus.STARTED,
            "ok": DirectiveStatus.SUCCEEDED,
            "fail": DirectiveStatus.FAILED,
            "unknown": DirectiveStatus.OUTCOME_UNKNOWN,
        }[later[0] if later else None]
        assert record.status is expected, records
    assert isinstance(h.events[0], ev.IncidentOpened)
