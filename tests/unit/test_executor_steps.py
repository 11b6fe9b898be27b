"""The executor's step state machine, pure (no broker, no database, no target).

The oracles come from DESIGN.md, not from the code: decide at the moment of acting
(invariant 5), a stop seen before the side effect stops it (7), a call that may have
landed is never reported failed or re-run (2), a fenced-out executor writes nothing
(2), and a step whose intent is in the log is never "refused" afterwards.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from conn_core.rules import Accepted, Refused
from conn_executor import steps
from conn_executor.containment import Containment
from conn_executor.lifecycle import Recovery
from conn_executor.steps import (
    BEFORE_SIDE_EFFECT,
    FINAL_PHASES,
    STOPS,
    TRANSITIONS,
    CallError,
    Elsewhere,
    Failed,
    Fenced,
    Go,
    IllegalTransition,
    NotStarted,
    Phase,
    Refuse,
    Stop,
    Succeeded,
    Unknown,
    Wait,
)
from conn_runtime.stops import GLOBAL_SCOPE
from conn_schemas.observations import ActionResult
from conn_schemas.values import RefusalReason

REFUSALS = [Refused(reason, f"because {reason.value}") for reason in RefusalReason]
STOP_SIGNALS = [Stop("kill_switch", "global kill switch engaged: drill"), Stop("hold", "on hold")]
LIMIT = 5.0
"""The bound from the gate to the call (the executor's `act_within`)."""
RESULT = ActionResult(idempotency_key="c-1", changed=True, before={"a": 1}, after={"a": 0})

refusals = st.sampled_from(REFUSALS)
maybe_refusal = st.none() | refusals
maybe_stop = st.none() | st.sampled_from(STOP_SIGNALS)


def _is_stop(refusal: Refused) -> bool:
    return refusal.reason in STOPS


def _legal(phase: Phase, result: steps.Next) -> None:
    """Every result a transition returns is a move `TRANSITIONS` allows."""
    steps.advance(phase, result)  # raises IllegalTransition otherwise


# -- the table ---------------------------------------------------------------------------


def test_final_phases_go_nowhere_and_the_side_effect_is_reached_only_through_the_gate() -> None:
    for phase in FINAL_PHASES:
        assert TRANSITIONS[phase] == frozenset()
    into_acting = {p for p, targets in TRANSITIONS.items() if Phase.ACTING in targets}
    assert into_acting == {Phase.GATED}
    into_gated = {p for p, targets in TRANSITIONS.items() if Phase.GATED in targets}
    assert into_gated == {Phase.INTENT_RECORDED}
    into_intent = {p for p, targets in TRANSITIONS.items() if Phase.INTENT_RECORDED in targets}
    assert into_intent == {Phase.ACCEPTED}


def test_nothing_after_the_intent_is_a_refusal_and_only_acting_can_be_unknown() -> None:
    for phase in (Phase.INTENT_RECORDED, Phase.GATED, Phase.ACTING):
        assert Phase.REFUSED not in TRANSITIONS[phase]
    for phase, targets in TRANSITIONS.items():
        if Phase.UNKNOWN in targets or Phase.FAILED in targets:
            assert phase is Phase.ACTING, phase


def test_moves_outside_the_table_are_refused() -> None:
    with pytest.raises(IllegalTransition):
        steps.moved(Phase.ACCEPTED, Phase.ACTING)  # skipping intent and gate
    with pytest.raises(IllegalTransition):
        steps.moved(Phase.CLAIMED, Phase.INTENT_RECORDED)  # acting before accepting
    with pytest.raises(IllegalTransition):
        steps.advance(Phase.ACTING, Refuse(REFUSALS[0]))
    with pytest.raises(IllegalTransition):
        steps.advance(Phase.SUCCEEDED, Go(Phase.ACTING))
    assert steps.advance(Phase.GATED, Go(Phase.GATED)) is Phase.GATED


# -- deciding ----------------------------------------------------------------------------


@given(decision=st.sampled_from([Accepted(True), Accepted(False), *REFUSALS]), stop=maybe_stop)
def test_decided_on_the_prefix(decision: Accepted | Refused, stop: Stop | None) -> None:
    for awaiting in (False, True):
        result = steps.decided(decision, stop=stop, awaiting=awaiting)
        _legal(Phase.CLAIMED, result)
        if isinstance(decision, Refused):
            assert result == Refuse(decision)
        elif stop is not None:  # a stop wins over waiting for approvers
            assert isinstance(result, Refuse)
            assert result.refusal.reason in (RefusalReason.KILL_SWITCH, RefusalReason.ON_HOLD)
        elif awaiting:
            assert isinstance(result, Wait)
        else:
            assert result == Go(Phase.CLAIMED)


def test_a_stop_names_its_kind() -> None:
    assert Stop("kill_switch", "x").refusal == Refused(RefusalReason.KILL_SWITCH, "x")
    assert Stop("hold", "y").refusal == Refused(RefusalReason.ON_HOLD, "y")


# -- the moment of acting ------------------------------------------------------------------


@given(refusal=refusals, phase=st.sampled_from(sorted(BEFORE_SIDE_EFFECT)))
def test_any_refusal_before_the_side_effect_stops_the_step(refusal: Refused, phase: Phase) -> None:
    """A record that lands after the directive but before the side effect (a hold, the
    kill switch, a close, a takeover, an authority change...) stops it, at every
    phase before acting: nothing goes on, and nothing after the intent is a refusal."""
    result = steps.rechecked(phase, refusal)
    _legal(phase, result)
    assert not isinstance(result, Go)
    if refusal.reason is RefusalReason.DUPLICATE:
        assert result == Elsewhere(refusal.detail)  # the log has it finished: add nothing
    elif phase is Phase.CLAIMED:
        assert result == Refuse(refusal)
    else:
        assert isinstance(result, NotStarted)
        assert refusal.detail in result.error


@pytest.mark.parametrize("phase", sorted(BEFORE_SIDE_EFFECT))
def test_a_clean_recheck_goes_on_in_place(phase: Phase) -> None:
    assert steps.rechecked(phase, None) == Go(phase)


def test_stops_at_and_after_the_gate_are_counted_as_stops() -> None:
    for refusal in REFUSALS:
        if refusal.reason is RefusalReason.DUPLICATE:
            continue
        at_gate = steps.rechecked(Phase.INTENT_RECORDED, refusal)
        after_gate = steps.rechecked(Phase.GATED, refusal)
        assert isinstance(at_gate, NotStarted) and isinstance(after_gate, NotStarted)
        if _is_stop(refusal):
            assert at_gate.stop == after_gate.stop == refusal.reason.value
            assert at_gate.error.startswith("stopped before side effect")
        else:
            assert at_gate.stop is None and after_gate.stop is None
            assert at_gate.error.startswith("not executed")
        assert after_gate.error.startswith("stopped before side effect")
        accepted = steps.rechecked(Phase.ACCEPTED, refusal)
        assert isinstance(accepted, NotStarted) and accepted.stop is None


@given(stop=maybe_stop)
def test_stop_signals_before_accepting_and_before_the_intent(stop: Stop | None) -> None:
    before_accept = steps.stopped(Phase.CLAIMED, stop)
    before_intent = steps.stopped(Phase.ACCEPTED, stop)
    _legal(Phase.CLAIMED, before_accept)
    _legal(Phase.ACCEPTED, before_intent)
    if stop is None:
        assert before_accept == Go(Phase.CLAIMED) and before_intent == Go(Phase.ACCEPTED)
    else:
        assert before_accept == Refuse(stop.refusal)
        assert isinstance(before_intent, NotStarted)
        assert before_intent.error == f"stopped before side effect: {stop.reason}"


@given(conflict=st.none() | refusals)
def test_a_conflicting_observation_stops_the_step(conflict: Refused | None) -> None:
    claimed = steps.gathered(Phase.CLAIMED, conflict)
    accepted = steps.gathered(Phase.ACCEPTED, conflict)
    if conflict is None:
        assert claimed == Go(Phase.CLAIMED) and accepted == Go(Phase.ACCEPTED)
    else:
        assert claimed == Refuse(conflict)
        assert accepted == NotStarted(f"not executed: {conflict.detail}")


def test_transitions_are_only_taken_from_their_phases() -> None:
    for phase in set(Phase) - BEFORE_SIDE_EFFECT:
        with pytest.raises(IllegalTransition):
            steps.rechecked(phase, None)
    for phase in set(Phase) - {Phase.CLAIMED, Phase.ACCEPTED}:
        with pytest.raises(IllegalTransition):
            steps.stopped(phase, None)
        with pytest.raises(IllegalTransition):
            steps.gathered(phase, None)


# -- the gate (fencing) --------------------------------------------------------------------


def test_the_gate() -> None:
    """One statement: a stop committed before it wins even if the claim moved; a
    claim that did not move belongs to another executor: write nothing, close nothing."""
    assert steps.gated(started=True) == Go(Phase.GATED)
    assert steps.gated(started=False) == Fenced()
    kinds: tuple[steps.StopKind, ...] = ("kill_switch", "hold")
    for started, kind in itertools.product((True, False), kinds):
        result = steps.gated(started=started, stop_kind=kind, stop_reason="drill")
        assert result == NotStarted("stopped before side effect: drill", stop=kind)
    for result in (steps.gated(started=True), steps.gated(started=False)):
        _legal(Phase.INTENT_RECORDED, result)


@given(elapsed=st.floats(min_value=0.0, max_value=3600.0))
def test_a_step_that_reaches_the_call_late_is_not_executed(elapsed: float) -> None:
    """Frozen or starved between the gate and the call for as long as the bound (below
    the consumer session timeout), the step may have lost its incident to another
    executor, which reports it: nothing ran, so it is StepFailed(not_started)."""
    result = steps.in_time(Phase.GATED, elapsed=elapsed, limit=LIMIT)
    _legal(Phase.GATED, result)
    if elapsed < LIMIT:
        assert result == Go(Phase.GATED)
    else:
        assert isinstance(result, NotStarted) and result.stop is None
        assert "between the gate and the call" in result.error
    for phase in set(Phase) - {Phase.GATED}:
        with pytest.raises(IllegalTransition):
            steps.in_time(phase, elapsed=0.0, limit=LIMIT)


# -- the call ------------------------------------------------------------------------------


@given(message=st.text(max_size=200))
def test_a_call_that_may_have_landed_is_unknown_never_failed(message: str) -> None:
    for error in (CallError(message), CallError.timed_out(2.5)):
        outcome = steps.called(error)
        _legal(Phase.ACTING, outcome)
        assert isinstance(outcome, Unknown)
        assert "may have landed" in outcome.reason and "Not retried" in outcome.reason
    timed_out = steps.called(CallError.timed_out(2.5))
    assert isinstance(timed_out, Unknown) and "no answer within 2.5s" in timed_out.reason


def test_only_a_target_that_answered_decides_the_outcome() -> None:
    assert steps.called(RESULT) == Succeeded(RESULT)
    rejected = steps.called(CallError("403 forbidden\x1b[31m", rejected=True))
    assert isinstance(rejected, Failed)
    assert "\x1b" not in rejected.error and "403 forbidden" in rejected.error


# -- taking up a step left unfinished ----------------------------------------------------


@pytest.mark.parametrize("action", list(Recovery))
def test_resumed_steps_follow_the_table(action: Recovery) -> None:
    phase = steps.RESUMED_AT[action]
    result = steps.resumed(action, owner="executor-0", generation=7)
    _legal(phase, result)
    if action is Recovery.OUTCOME_UNKNOWN:
        assert isinstance(result, Unknown) and "not re-run" in result.reason
        assert "executor-0" in result.reason and "generation 7" in result.reason
    elif action is Recovery.NOT_STARTED:
        assert isinstance(result, NotStarted) and "nothing was executed" in result.error
    elif action is Recovery.REFUSE_RESTARTED:
        assert isinstance(result, Refuse)
        assert result.refusal.reason is RefusalReason.STALE_BASE
    elif action is Recovery.FINISH_FROM_LOG:
        assert isinstance(result, Elsewhere)
    else:
        assert result == Go(phase)
        assert phase in (Phase.CLAIMED, Phase.ACCEPTED), "never resumed past the gate to act"


# -- whole runs ------------------------------------------------------------------------------

Observation = tuple[str, object]


CLEAR: dict[str, object] = {
    "decision": Accepted(True),
    "stop": None,
    "awaiting": False,
    "conflict": None,
    "before_accept": None,
    "at_gate": None,
    "gate": "started",
    "after_gate": None,
    "since_gate": 0.2,
}
OBSTACLES: dict[str, st.SearchStrategy[object]] = {
    "decision": st.sampled_from(REFUSALS),
    "stop": st.sampled_from(STOP_SIGNALS),
    "awaiting": st.just(True),
    "conflict": refusals,
    "before_accept": refusals,
    "at_gate": refusals,
    "gate": st.sampled_from(["fenced", "kill_switch", "hold"]),
    "after_gate": refusals,
    "since_gate": st.floats(min_value=LIMIT, max_value=3600.0),
}


@st.composite
def runs(draw: st.DrawFn) -> list[Observation]:
    """What the world says at each point of one consequential step's life: clear,
    except for up to two obstacles (a refusal, a stop, a fenced gate...) anywhere."""
    blocked = draw(st.sets(st.sampled_from(sorted(OBSTACLES)), max_size=2))
    world = [(key, draw(OBSTACLES[key]) if key in blocked else CLEAR[key]) for key in CLEAR]
    world.append(("call", draw(st.sampled_from(["answered", "rejected", "timeout", "error"]))))
    return world


def _drive(world: list[Observation]) -> tuple[Phase, bool]:
    """The shell's order of I/O for a consequential LIVE step, driven by the pure
    transitions alone. Returns the final phase and whether the target was called."""
    seen = dict(world)
    phase = Phase.CLAIMED

    def step(result: steps.Next) -> bool:
        nonlocal phase
        phase = steps.advance(phase, result)
        return isinstance(result, Go)

    decision = seen["decision"]
    assert isinstance(decision, Accepted | Refused)
    stop = seen["stop"]
    assert stop is None or isinstance(stop, Stop)
    if not step(steps.decided(decision, stop=stop, awaiting=bool(seen["awaiting"]))):
        return phase, False
    for key, transition in (("conflict", steps.gathered), ("before_accept", steps.rechecked)):
        value = seen[key]
        assert value is None or isinstance(value, Refused)
        if not step(transition(phase, value)):
            return phase, False
    phase = steps.moved(phase, Phase.ACCEPTED)
    phase = steps.moved(phase, Phase.INTENT_RECORDED)
    at_gate = seen["at_gate"]
    assert at_gate is None or isinstance(at_gate, Refused)
    if not step(steps.rechecked(phase, at_gate)):
        return phase, False
    gate = seen["gate"]
    kind: steps.StopKind | None = (
        "kill_switch" if gate == "kill_switch" else "hold" if gate == "hold" else None
    )
    if not step(steps.gated(started=gate == "started", stop_kind=kind, stop_reason="r")):
        return phase, False
    after_gate = seen["after_gate"]
    assert after_gate is None or isinstance(after_gate, Refused)
    if not step(steps.rechecked(phase, after_gate)):
        return phase, False
    since_gate = seen["since_gate"]
    assert isinstance(since_gate, float)
    if not step(steps.in_time(phase, elapsed=since_gate, limit=LIMIT)):
        return phase, False
    phase = steps.moved(phase, Phase.ACTING)
    call = seen["call"]
    answers: dict[str, ActionResult | CallError] = {
        "answered": RESULT,
        "rejected": CallError("no", rejected=True),
        "timeout": CallError.timed_out(1.0),
        "error": CallError("connection reset"),
    }
    phase = steps.advance(phase, steps.called(answers[str(call)]))
    return phase, True


@given(world=runs())
def test_a_whole_run_calls_the_target_only_when_nothing_stopped_it(
    world: list[Observation],
) -> None:
    seen = dict(world)
    phase, called = _drive(world)
    assert phase in FINAL_PHASES or phase is Phase.AWAITING_APPROVAL
    clear = all(seen[key] == value for key, value in CLEAR.items())
    assert called is clear, "acted although something stopped it, or stopped for nothing"
    if called:
        expected = {
            "answered": Phase.SUCCEEDED,
            "rejected": Phase.FAILED,
            "timeout": Phase.UNKNOWN,
            "error": Phase.UNKNOWN,
        }
        assert phase is expected[str(seen["call"])]
    if phase is Phase.FENCED:
        assert seen["gate"] == "fenced", "only the gate says the claim is not ours"
    if phase is Phase.ELSEWHERE:
        assert any(
            isinstance(v, Refused) and v.reason is RefusalReason.DUPLICATE for v in seen.values()
        )


# -- containment (measured, in memory) ------------------------------------------------------


def test_side_effects_started_after_a_stop_are_counted_once_per_stop_and_scope() -> None:
    def late(kind: str) -> float:
        value = REGISTRY.get_sample_value(
            "conn_executor_side_effects_after_stop_total", {"kind": kind}
        )
        return value or 0.0

    c = Containment()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    c.side_effect("inc-a", t0)
    c.side_effect("inc-a", t0 + timedelta(seconds=2))
    c.side_effect("inc-b", t0 + timedelta(seconds=3))
    holds, kills = late("hold"), late("kill_switch")
    c.stop_seen("hold", "inc-a", t0 + timedelta(seconds=1))
    assert late("hold") == holds + 1  # only inc-a's, only the one after the hold
    c.stop_seen("hold", "inc-a", t0 + timedelta(seconds=1))
    assert late("hold") == holds + 1  # the same stop seen again is not counted again
    c.stop_seen("kill_switch", GLOBAL_SCOPE, t0 + timedelta(seconds=1))
    assert late("kill_switch") == kills + 2  # the kill switch covers every incident
    c.stop_seen("hold", "inc-b", t0 + timedelta(seconds=5))
    assert late("hold") == holds + 1  # nothing started after this one
