"""The executor's step life cycle as explicit, pure transitions (no I/O).

A directive's claim in PostgreSQL moves

    claimed --start (the gate: fenced + no stop)--> started --finish--> succeeded | failed | unknown
    claimed --finish--> refused | failed (not started) | succeeded (read-only / note)

and every transition is fenced by (generation, executor_id): only the current
owner of the claim moves it, so a fenced-out executor's late finish changes
nothing. The side effect happens only after `started`; StepStarted is appended to
the log *before* the gate, so "StepStarted in the log but the claim never
started" means nothing was executed.

When an executor finds a claim it did not finish (after a crash, a rebalance, a
pause past its session timeout), `recovery` says what to do from what the log and
the claim say — never re-running anything blindly.
"""

from __future__ import annotations

from enum import StrEnum

from conn_core.state import DirectiveStatus


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"
    REFUSED = "refused"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


FINAL = frozenset(
    {ClaimStatus.REFUSED, ClaimStatus.SUCCEEDED, ClaimStatus.FAILED, ClaimStatus.UNKNOWN}
)

TRANSITIONS: dict[ClaimStatus, frozenset[ClaimStatus]] = {
    ClaimStatus.CLAIMED: frozenset(
        {ClaimStatus.STARTED, ClaimStatus.REFUSED, ClaimStatus.FAILED, ClaimStatus.SUCCEEDED}
    ),
    ClaimStatus.STARTED: frozenset(
        {ClaimStatus.SUCCEEDED, ClaimStatus.FAILED, ClaimStatus.UNKNOWN}
    ),
    **{status: frozenset() for status in FINAL},
}
"""The claim's allowed moves (enforced in SQL by `ClaimStore`)."""

LOG_OUTCOME: dict[DirectiveStatus, ClaimStatus] = {
    DirectiveStatus.SUCCEEDED: ClaimStatus.SUCCEEDED,
    DirectiveStatus.FAILED: ClaimStatus.FAILED,
    DirectiveStatus.OUTCOME_UNKNOWN: ClaimStatus.UNKNOWN,
    DirectiveStatus.REFUSED: ClaimStatus.REFUSED,
}
"""A directive whose outcome is in the log: the claim is closed to match."""


class Recovery(StrEnum):
    FINISH_FROM_LOG = "finish_from_log"
    """The log has the outcome: close the claim to match; nothing else."""
    OUTCOME_UNKNOWN = "outcome_unknown"
    """The claim passed the gate: the side effect may have begun. Re-gather the
    target and report StepOutcomeUnknown; never re-run."""
    NOT_STARTED = "not_started"
    """StepStarted is in the log but the claim never passed the gate: nothing ran.
    Report StepFailed(not_started); the commander re-issues if still wanted."""
    DECIDE = "decide"
    """Nothing recorded, and the log prefix before the directive is at hand."""
    REFUSE_RESTARTED = "refuse_restarted"
    """Nothing recorded, the prefix is not at hand (history re-read after a crash):
    refuse it as stale rather than decide on a picture nobody checked."""
    CONTINUE = "continue"
    """Accepted, never started: re-check against the log now, then run it."""


def recovery(log: DirectiveStatus, claim: ClaimStatus, *, prefix_known: bool) -> Recovery:
    """What to do with a claim left unfinished. `log` is the directive's status in
    the incident folded up to the partition's end; `claim` is its claim's status."""
    if claim in FINAL:
        raise ValueError(f"claim is already final ({claim.value})")
    if log in (
        DirectiveStatus.SUCCEEDED,
        DirectiveStatus.FAILED,
        DirectiveStatus.OUTCOME_UNKNOWN,
    ):
        return Recovery.FINISH_FROM_LOG
    if claim is ClaimStatus.STARTED:
        return Recovery.OUTCOME_UNKNOWN  # past the gate: whatever the log says otherwise
    if log is DirectiveStatus.REFUSED:
        return Recovery.FINISH_FROM_LOG
    if log is DirectiveStatus.STARTED:
        return Recovery.NOT_STARTED
    if log is DirectiveStatus.ISSUED:
        return Recovery.DECIDE if prefix_known else Recovery.REFUSE_RESTARTED
    return Recovery.CONTINUE
