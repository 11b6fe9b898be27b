"""One directive's step as an explicit state machine: phases and pure transitions.

No I/O here: every transition takes immutable values (a decision, a re-check's
verdict, the gate's answer, how the call ended) and returns an explicit result
that names the next phase and what the shell appends. The shell
(`conn_executor.service`) does the I/O in between — decide, gather, look ahead,
pass the gate, call the target, append — and asks this module what follows.

    CLAIMED ─ refused / stop / conflict / re-check refused ────────> REFUSED
       │  │                                      (DirectiveRefused; the claim is closed)
       │  └ needs approvers ──> AWAITING_APPROVAL ─ quorum ─> CLAIMED (taken up again)
       │                          └ decline / stop / expiry / change ─> REFUSED
       v (DirectiveAccepted)
    ACCEPTED ─ stop / conflict / re-check refused ─────────────────> NOT_STARTED
       │  └ read-only, record note, verify: run ─────────────────> SUCCEEDED
       v (StepStarted: the intent, before the gate)
    INTENT_RECORDED ─ re-check at the gate refused ────────────────> NOT_STARTED
       │              ─ the gate finds a stop committed ──────────> NOT_STARTED
       │              ─ the gate finds the claim not ours ────────> FENCED
       v (the gate: the claim is `started`, the moment of acting)
    GATED ─ re-check after the gate refused ───────────────────────> NOT_STARTED
       v
    ACTING ─ answered ─> SUCCEEDED │ rejected ─> FAILED │ no answer / timeout ─> UNKNOWN

    CLAIMED … GATED ─ re-check: the log has it finished by another ─> ELSEWHERE
    (taken up after a crash: ACTING ─ the outcome is in the log ─> ELSEWHERE)

NOT_STARTED is StepFailed(not_started): nothing ran, nothing to hold for.
ELSEWHERE and FENCED append nothing: the log or the claim's new owner has the word.
A step left unfinished by a crash or a rebalance is taken up as
`conn_executor.lifecycle.recovery` says (never re-run blindly).

The safety contract (DESIGN.md, invariants 2, 5 and 7) in these terms:
- decided at the moment of acting: a step reaches ACTING only through GATED, after
  re-checks against everything its partition held at INTENT_RECORDED and at GATED;
- a hold, a close or the kill switch seen at any phase before ACTING stops it
  (`stopped`, `rechecked`, `gated`); nothing after INTENT_RECORDED is ever a
  DirectiveRefused (StepStarted is in the log: it is StepFailed(not_started));
- a call that got no answer may have landed: UNKNOWN, never FAILED, never re-run;
- fencing: a gate that does not move the claim means another executor owns it: FENCED.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from conn_core.rules import Accepted, Refused
from conn_executor.lifecycle import Recovery
from conn_schemas.observations import ActionResult
from conn_schemas.values import MAX_MACHINE_TEXT, RefusalReason, clean_text


class Phase(StrEnum):
    CLAIMED = "claimed"
    """The claim is ours; nothing decided on it in the log yet."""
    AWAITING_APPROVAL = "awaiting_approval"
    """Accepted by the rules but needs approvers: the claim stays open."""
    ACCEPTED = "accepted"
    """DirectiveAccepted is in the log."""
    INTENT_RECORDED = "intent_recorded"
    """StepStarted is in the log; the claim has not passed the gate."""
    GATED = "gated"
    """The claim passed the gate (`started`): from here the side effect may begin."""
    ACTING = "acting"
    """The call to the target is under way."""
    REFUSED = "refused"
    NOT_STARTED = "not_started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    ELSEWHERE = "elsewhere"
    """The log has the directive finished by another executor: add nothing."""
    FENCED = "fenced"
    """The claim is no longer ours: add nothing, its new owner decides."""


FINAL_PHASES = frozenset(
    {
        Phase.REFUSED,
        Phase.NOT_STARTED,
        Phase.SUCCEEDED,
        Phase.FAILED,
        Phase.UNKNOWN,
        Phase.ELSEWHERE,
        Phase.FENCED,
    }
)

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.CLAIMED: frozenset(
        {Phase.AWAITING_APPROVAL, Phase.ACCEPTED, Phase.REFUSED, Phase.ELSEWHERE}
    ),
    Phase.AWAITING_APPROVAL: frozenset({Phase.CLAIMED, Phase.REFUSED}),
    Phase.ACCEPTED: frozenset(
        {Phase.INTENT_RECORDED, Phase.NOT_STARTED, Phase.SUCCEEDED, Phase.ELSEWHERE}
    ),
    Phase.INTENT_RECORDED: frozenset(
        {Phase.GATED, Phase.NOT_STARTED, Phase.FENCED, Phase.ELSEWHERE}
    ),
    Phase.GATED: frozenset({Phase.ACTING, Phase.NOT_STARTED, Phase.ELSEWHERE}),
    Phase.ACTING: frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.UNKNOWN, Phase.ELSEWHERE}),
    **{phase: frozenset() for phase in FINAL_PHASES},
}
"""Every move a step can make (the functions below never return another)."""

BEFORE_SIDE_EFFECT = frozenset({Phase.CLAIMED, Phase.ACCEPTED, Phase.INTENT_RECORDED, Phase.GATED})
"""Phases in which a stop or a changed picture still stops the step."""

STOPS = frozenset({RefusalReason.ON_HOLD, RefusalReason.KILL_SWITCH, RefusalReason.INCIDENT_CLOSED})
"""Refusals at the last gate that are a stop (not a changed picture)."""

StopKind = Literal["kill_switch", "hold"]


@dataclass(frozen=True)
class Stop:
    """A stop signal seen before acting: the kill switch or the incident's hold."""

    kind: StopKind
    reason: str

    @property
    def refusal(self) -> Refused:
        code = RefusalReason.KILL_SWITCH if self.kind == "kill_switch" else RefusalReason.ON_HOLD
        return Refused(code, self.reason)


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Go:
    """Carry on: the shell does what `phase` calls for next."""

    phase: Phase


@dataclass(frozen=True)
class Wait:
    """Two-person rule: recorded, the claim stays open until the approvers answer."""

    phase: Literal[Phase.AWAITING_APPROVAL] = Phase.AWAITING_APPROVAL


@dataclass(frozen=True)
class Refuse:
    """Append DirectiveRefused and close the claim as refused."""

    refusal: Refused
    phase: Literal[Phase.REFUSED] = Phase.REFUSED


@dataclass(frozen=True)
class NotStarted:
    """Append StepFailed(not_started) and close the claim as failed: nothing ran."""

    error: str
    stop: str | None = None
    """The stop that prevented it (for the containment metrics), if it was one."""
    phase: Literal[Phase.NOT_STARTED] = Phase.NOT_STARTED


@dataclass(frozen=True)
class Elsewhere:
    """Append nothing; close the claim to match the log if it is still ours."""

    detail: str
    phase: Literal[Phase.ELSEWHERE] = Phase.ELSEWHERE


@dataclass(frozen=True)
class Fenced:
    """Append nothing, close nothing: the claim has a new owner."""

    phase: Literal[Phase.FENCED] = Phase.FENCED


@dataclass(frozen=True)
class Succeeded:
    result: ActionResult
    phase: Literal[Phase.SUCCEEDED] = Phase.SUCCEEDED


@dataclass(frozen=True)
class Failed:
    """The target refused the call: nothing changed (its words, made to fit)."""

    error: str
    phase: Literal[Phase.FAILED] = Phase.FAILED


@dataclass(frozen=True)
class Unknown:
    """The call may have landed (no answer, or a step found past the gate after a
    crash): re-gather the target, report StepOutcomeUnknown, never re-run."""

    reason: str
    note: str
    """For the incident record."""
    phase: Literal[Phase.UNKNOWN] = Phase.UNKNOWN


Next = Go | Wait | Refuse | NotStarted | Elsewhere | Fenced | Succeeded | Failed | Unknown
Outcome = Succeeded | Failed | Unknown


class IllegalTransition(ValueError):
    pass


def _from(phase: Phase, *allowed: Phase) -> None:
    if phase not in allowed:
        raise IllegalTransition(f"not from {phase.value}")


# -- transitions ------------------------------------------------------------------------


def decided(decision: Accepted | Refused, *, stop: Stop | None, awaiting: bool) -> Next:
    """CLAIMED, decided on the log prefix before the directive. `stop` is the stop
    signal read for a directive that would change something (None when none is
    engaged or the action is read-only); `awaiting`: it needs approvers."""
    if isinstance(decision, Refused):
        return Refuse(decision)
    if stop is not None:
        return Refuse(stop.refusal)
    if awaiting:
        return Wait()
    return Go(Phase.CLAIMED)


def stopped(phase: Phase, stop: Stop | None) -> Next:
    """A stop signal read before going on (CLAIMED: before accepting; ACCEPTED:
    before recording the intent)."""
    _from(phase, Phase.CLAIMED, Phase.ACCEPTED)
    if stop is None:
        return Go(phase)
    if phase is Phase.CLAIMED:
        return Refuse(stop.refusal)
    return NotStarted(f"stopped before side effect: {stop.reason}")


def gathered(phase: Phase, conflict: Refused | None) -> Next:
    """The target's live state was read before the step: a conflict with what was
    directed or expected stops it (the fold derives a hold from the observation)."""
    _from(phase, Phase.CLAIMED, Phase.ACCEPTED)
    if conflict is None:
        return Go(phase)
    if phase is Phase.CLAIMED:
        return Refuse(conflict)
    return NotStarted(f"not executed: {conflict.detail}")


def rechecked(phase: Phase, refusal: Refused | None) -> Next:
    """The re-check against everything the partition holds now (the moment of
    acting): CLAIMED before accepting, ACCEPTED before running a note, INTENT_RECORDED
    right before the gate, GATED right after it."""
    _from(phase, *BEFORE_SIDE_EFFECT)
    if refusal is None:
        return Go(phase)
    if refusal.reason is RefusalReason.DUPLICATE:
        return Elsewhere(refusal.detail)
    if phase is Phase.CLAIMED:
        return Refuse(refusal)
    stop = refusal.reason.value if refusal.reason in STOPS else None
    if phase is Phase.ACCEPTED or (phase is Phase.INTENT_RECORDED and stop is None):
        return NotStarted(f"not executed: {refusal.detail}")
    return NotStarted(f"stopped before side effect: {refusal.detail}", stop=stop)


def gated(*, started: bool, stop_kind: StopKind | None = None, stop_reason: str = "") -> Next:
    """INTENT_RECORDED -> the gate's answer (one statement: fenced, and no stop
    committed before it): a stop wins; a claim that did not move is not ours."""
    if stop_kind is not None:
        return NotStarted(f"stopped before side effect: {stop_reason}", stop=stop_kind)
    if not started:
        return Fenced()
    return Go(Phase.GATED)


def in_time(phase: Phase, *, elapsed: float, limit: float) -> Next:
    """GATED, the last thing before the call: the time since the gate statement was
    sent. A step that took longer than `limit` (below the consumer session timeout)
    may belong to another executor by now (this process was frozen or starved, was
    expelled from its group, and the new owner took the claim over and reported it),
    and its last look is that old: it is not executed (nothing ran)."""
    _from(phase, Phase.GATED)
    if elapsed < limit:
        return Go(phase)
    return NotStarted(
        f"not executed: {elapsed:.1f} s passed between the gate and the call (limit "
        f"{limit:g} s); the claim and the last look may be out of date"
    )


def called(outcome: ActionResult | CallError) -> Outcome:
    """ACTING -> how the call ended."""
    if isinstance(outcome, ActionResult):
        return Succeeded(outcome)
    if outcome.rejected:
        return Failed(clean_text(outcome.message, MAX_MACHINE_TEXT, multiline=True))
    return Unknown(
        f"{outcome.message}: the call may have landed. Not retried; the state observed "
        "after it is attached, and the step is verified against the state gathered before it.",
        note="no answer from the target; outcome unknown, not retried",
    )


@dataclass(frozen=True)
class CallError:
    """A call that raised: `rejected` only when the target answered no (nothing
    changed); a timeout or a transport error may have landed."""

    message: str
    rejected: bool = False

    @classmethod
    def timed_out(cls, seconds: float) -> CallError:
        return cls(f"no answer within {seconds}s")


def advance(phase: Phase, result: Next) -> Phase:
    """The phase after `result`, checked against `TRANSITIONS` (a Go to the same phase
    keeps it: the shell moves on by doing that phase's next I/O and calling `moved`)."""
    if result.phase is phase and isinstance(result, Go):
        return phase
    return moved(phase, result.phase)


def moved(phase: Phase, to: Phase) -> Phase:
    """The shell did the I/O of a move (appended DirectiveAccepted or StepStarted,
    passed the gate, made the call): allowed only along `TRANSITIONS`."""
    if to not in TRANSITIONS[phase]:
        raise IllegalTransition(f"{phase.value} -> {to.value}")
    return to


# -- taking up a step left unfinished ---------------------------------------------------

RESUMED_AT: dict[Recovery, Phase] = {
    Recovery.FINISH_FROM_LOG: Phase.ACTING,
    Recovery.OUTCOME_UNKNOWN: Phase.ACTING,
    Recovery.NOT_STARTED: Phase.INTENT_RECORDED,
    Recovery.REFUSE_RESTARTED: Phase.CLAIMED,
    Recovery.DECIDE: Phase.CLAIMED,
    Recovery.CONTINUE: Phase.ACCEPTED,
}
"""The phase a step left unfinished is in, by what `lifecycle.recovery` says (a claim
past the gate counts as ACTING: the side effect may have begun; so does one whose
outcome is already in the log, whatever the claim says)."""


def resumed(action: Recovery, *, owner: str, generation: int) -> Next:
    """What follows for a step taken over from `owner` (its claim's last owner, in
    `generation`): the phase it is resumed in is `RESUMED_AT[action]`."""
    if action is Recovery.FINISH_FROM_LOG:
        return Elsewhere("the log has its outcome")
    if action is Recovery.OUTCOME_UNKNOWN:
        return Unknown(
            f"executor {owner} (generation {generation}) started this step and stopped "
            "before recording its outcome; it was not re-run. The state observed now is "
            "attached.",
            note="executor restarted mid-step; not re-run",
        )
    if action is Recovery.NOT_STARTED:
        return NotStarted(
            f"executor {owner} recorded StepStarted but stopped before its side effect (its "
            "claim never passed the gate): nothing was executed; re-read the ledger and "
            "re-issue it"
        )
    if action is Recovery.REFUSE_RESTARTED:
        return Refuse(
            Refused(
                RefusalReason.STALE_BASE,
                "the executor restarted while deciding this directive; nothing was "
                "executed: re-read the ledger and re-issue it",
            )
        )
    return Go(RESUMED_AT[action])
