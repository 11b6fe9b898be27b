"""`conn_core.rules.recheck`: deciding at the moment of acting (invariants 3, 4, 5, 7).

The executor decides a directive with `decide` on the log *before* it; right before
the side effect it folds everything its partition holds by then and asks
`recheck`. DESIGN.md invariant 5: "checked again immediately before the side
effect against everything the incident's log holds by then (a close, takeover,
authority change or derived hold that lands after the directive stops it)" — and
the directive's own records must never make it refuse itself.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from builders import ALICE, DANA, RUNBOOK, History
from hypothesis import given, settings
from hypothesis import strategies as st

from conn_core.fold import evolve_control, fold
from conn_core.rules import Accepted, decide, recheck
from conn_core.state import ControlState
from conn_schemas import events as ev
from conn_schemas.values import (
    DisableFlagRule,
    DrainWorkerPool,
    RefusalReason,
    RestartDependencyTier,
    Verdict,
    Verify,
)

DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")
NO_CONTROL = ControlState()

NARROW_EXCLUDING_DRAIN = RUNBOOK.read_bytes().replace(
    b"    targets: [cache-invalidation, checkout-workers]", b"    targets: [checkout-workers]"
)
NARROW_KEEPING_DRAIN = RUNBOOK.read_bytes().replace(
    b"max_consequential_steps: 10", b"max_consequential_steps: 5"
)


def queued(action=DRAIN) -> tuple[History, str, str]:  # type: ignore[no-untyped-def]
    """A recovered step, an accepted explicit verify awaiting its snapshot, then the
    directive under test — accepted by `decide` on the log before it."""
    h = History().open().declare()
    s1 = h.direct(DISABLE)
    h.accept(s1, DISABLE)
    h.start(s1, DISABLE)
    h.succeed(s1, DISABLE)
    h.snapshot(s1, Verdict.RECOVERED)
    verify = h.direct(Verify())
    h.accept(verify, Verify(), consequential=False)
    before = fold(h.events, h.incident_id)
    payload = ev.DirectiveIssuedPayload(action=action, based_on_sequence=before.sequence)
    assert decide(before, payload, ALICE, NO_CONTROL) == Accepted(consequential=True)
    cid = h.direct(action)
    return h, cid, verify


def check(h: History, cid: str, control: ControlState = NO_CONTROL, **kw: str):  # type: ignore[no-untyped-def]
    return recheck(fold(h.events, h.incident_id), cid, control, **kw)


def reason(h: History, cid: str, control: ControlState = NO_CONTROL) -> RefusalReason | None:
    refusal = check(h, cid, control, executor_id="x1")
    return None if refusal is None else refusal.reason


def test_nothing_after_the_directive_lets_it_run() -> None:
    h, cid, _ = queued()
    assert check(h, cid) is None


def test_its_own_records_never_refuse_it() -> None:
    h, cid, _ = queued()
    h.gather(cid)  # pre-step StateGathered (a state change, but its own)
    h.accept(cid, DRAIN)
    assert check(h, cid, executor_id="x1") is None
    h.start(cid, DRAIN, executor_id="x1")
    assert check(h, cid, executor_id="x1") is None, "its own StepStarted"


def test_its_own_start_does_not_count_against_the_blast_radius() -> None:
    h, cid, _ = queued(RESTART)  # max_restarts_per_tier_region: 1
    h.accept(cid, RESTART)
    h.start(cid, RESTART, executor_id="x1")
    assert check(h, cid, executor_id="x1") is None


def test_started_by_another_executor_is_not_ours_to_run() -> None:
    h, cid, _ = queued()
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN, executor_id="x2")
    assert reason(h, cid) is RefusalReason.DUPLICATE
    # ...unless we hold the fenced claim: that StepStarted is the intent of an
    # executor that lost it (the gate stops it), and the step is ours to finish.
    state = fold(h.events, h.incident_id)
    assert recheck(state, cid, NO_CONTROL, executor_id="x1", owns_claim=True) is None


def test_a_directive_finished_in_the_log_is_never_run_again() -> None:
    for finish in ("refuse", "fail", "unknown"):
        h, cid, _ = queued()
        if finish == "refuse":
            h.refuse(cid, DRAIN, RefusalReason.STALE_BASE)
        else:
            h.accept(cid, DRAIN)
            h.start(cid, DRAIN, executor_id="x2")
            getattr(h, finish)(cid, DRAIN)
        state = fold(h.events, h.incident_id)
        refusal = recheck(state, cid, NO_CONTROL, executor_id="x1", owns_claim=True)
        assert refusal is not None and refusal.reason is RefusalReason.DUPLICATE, finish


def test_queued_behind_a_close() -> None:
    h, cid, _ = queued()
    h.close()
    assert reason(h, cid) is RefusalReason.INCIDENT_CLOSED


def test_queued_behind_a_takeover() -> None:
    h, cid, _ = queued()
    h.request_takeover()
    sha = h.packet()
    h.take_over(sha, DANA)
    assert reason(h, cid) is RefusalReason.NOT_CONN_HOLDER


def test_queued_behind_a_handoff_request() -> None:
    h, cid, _ = queued()
    h.request_takeover()
    assert reason(h, cid) is RefusalReason.STALE_BASE


def test_queued_behind_an_authority_that_excludes_it() -> None:
    h, cid, _ = queued()
    h.declare(content=NARROW_EXCLUDING_DRAIN)
    refusal = check(h, cid)
    assert refusal is not None and refusal.reason is RefusalReason.TARGET_NOT_ALLOWED
    assert "authority in force now" in refusal.detail


def test_queued_behind_an_authority_change_that_still_allows_it_is_stale() -> None:
    h, cid, _ = queued()
    h.declare(content=NARROW_KEEPING_DRAIN)
    assert reason(h, cid) is RefusalReason.STALE_BASE


@pytest.mark.parametrize("verdict", [v for v in Verdict if v is not Verdict.RECOVERED])
def test_queued_behind_a_failing_verification(verdict: Verdict) -> None:
    h, cid, verify = queued()
    h.snapshot(verify, verdict)
    assert reason(h, cid) is RefusalReason.ON_HOLD


def test_queued_behind_a_passing_verification_is_stale() -> None:
    h, cid, verify = queued()
    h.snapshot(verify, Verdict.RECOVERED)
    assert reason(h, cid) is RefusalReason.STALE_BASE


def test_queued_behind_a_hold_and_the_kill_switch() -> None:
    h, cid, _ = queued()
    control = ControlState()
    evolve_control(control, h.kill_switch(True))
    assert reason(h, cid, control) is RefusalReason.KILL_SWITCH
    h.hold()
    assert reason(h, cid) is RefusalReason.ON_HOLD


def test_queued_behind_a_failed_step_and_a_conflict() -> None:
    h, cid, _ = queued()
    other = "other-step"
    h._add(
        ev.StepFailed,
        ev.StepFailedPayload(action=DISABLE, error="boom", summary="x", duration_ms=1),
        h.events[-1].actor,
        other,
    )
    # A failure of an unknown correlation id changes nothing; a refusal that holds does.
    assert reason(h, cid) is None
    h.refuse(other, DISABLE, RefusalReason.EXPECTATION_CONFLICT)
    assert reason(h, cid) is RefusalReason.ON_HOLD


def test_records_that_change_nothing_do_not_refuse() -> None:
    h, cid, _ = queued()
    h.alert()
    h.note()
    h.resume()  # not on hold: ignored by the rules
    h.direct(Verify())  # another directive issued after it
    assert check(h, cid) is None


# --- the property: refused iff something not its own changed the state after it --------

FOREIGN: dict[str, Callable[[History, str, str], None]] = {
    "hold": lambda h, cid, v: h.hold(),
    "close": lambda h, cid, v: h.close(),
    "verified_ok": lambda h, cid, v: h.snapshot(v, Verdict.RECOVERED),
    "verified_mixed": lambda h, cid, v: h.snapshot(v, Verdict.MIXED),
    "other_gather": lambda h, cid, v: h.gather(v, purpose="directed"),
    "narrow_excluding": lambda h, cid, v: h.declare(content=NARROW_EXCLUDING_DRAIN),
    "narrow_keeping": lambda h, cid, v: h.declare(content=NARROW_KEEPING_DRAIN),
    "handoff": lambda h, cid, v: h.request_takeover(),
}
NEUTRAL: dict[str, Callable[[History, str, str], None]] = {
    "alert": lambda h, cid, v: h.alert(),
    "note": lambda h, cid, v: h.note(cid),
    "other_directive": lambda h, cid, v: h.direct(Verify()),
    "stray_resume": lambda h, cid, v: h.resume(),
}
OWN = ["own_gather", "own_accept", "own_start"]


@settings(max_examples=300, deadline=None)
@given(
    later=st.lists(st.sampled_from([*FOREIGN, *NEUTRAL]), max_size=5),
    own=st.integers(min_value=0, max_value=3),
    where=st.lists(st.integers(min_value=0, max_value=5), min_size=3, max_size=3),
)
def test_refused_iff_a_later_record_not_its_own_changed_the_state(
    later: list[str], own: int, where: list[int]
) -> None:
    h, cid, verify = queued()
    steps: list[str] = list(later)
    for i, name in enumerate(OWN[:own]):  # its own records, in their order, anywhere
        steps.insert(min(len(steps), max(where[: i + 1]) + i), name)
    for name in steps:
        if name == "own_gather":
            h.gather(cid)
        elif name == "own_accept":
            h.accept(cid, DRAIN)
        elif name == "own_start":
            h.start(cid, DRAIN, executor_id="x1")
        else:
            {**FOREIGN, **NEUTRAL}[name](h, cid, verify)
    refusal = check(h, cid, executor_id="x1")
    changed = any(name in FOREIGN for name in later)
    assert (refusal is not None) == changed, (steps, refusal)


def test_two_replicas_issue_two_steps_at_once_and_only_the_first_may_run() -> None:
    """DESIGN 3 (one step at a time), third line: two API replicas decide on the same
    view and both append a consequential directive. The fold opens the first step at
    its DirectiveIssued; at the moment of acting the second is refused while the first
    is open and unverified (no state change landed in between, so only this check
    stops it)."""
    h = History().open().declare()
    before = fold(h.events, h.incident_id)
    for action in (DRAIN, RESTART):
        payload = ev.DirectiveIssuedPayload(action=action, based_on_sequence=before.sequence)
        assert decide(before, payload, ALICE, NO_CONTROL) == Accepted(consequential=True)
    first = h.direct(DRAIN, based_on=before.sequence)
    second = h.direct(RESTART, based_on=before.sequence)
    state = fold(h.events, h.incident_id)
    assert state.open_step == first
    assert recheck(state, first, NO_CONTROL) is None
    refused = recheck(state, second, NO_CONTROL)
    assert refused is not None and refused.reason is RefusalReason.STEP_UNVERIFIED, refused
    assert first in refused.detail
