"""A directive whose handling the runtime gave up on (`ExecutorService.handle_failed`,
after `handle` kept failing for a reason that is not an outage) gets an outcome, pure
part: for every combination of what the log and the open claim say, `given_up` names
one the step's state machine allows, and the safety contract holds (DESIGN.md,
invariant 2): a claim past the fenced gate (the side effect may have begun) is
reported unknown, never failed or refused; nothing is ever run or decided again."""

from __future__ import annotations

import pytest

from conn_core.state import DirectiveStatus
from conn_executor import steps
from conn_executor.lifecycle import ClaimStatus, recovery
from conn_executor.service import given_up

LOG_HAS_OUTCOME = {
    DirectiveStatus.SUCCEEDED,
    DirectiveStatus.FAILED,
    DirectiveStatus.OUTCOME_UNKNOWN,
}


def expected(log: DirectiveStatus, claim: ClaimStatus) -> type:
    """The oracle, from the contract rather than from `recovery`."""
    if log in LOG_HAS_OUTCOME:
        return steps.Elsewhere  # the log has the word: close the claim to match
    if claim is ClaimStatus.STARTED:
        return steps.Unknown  # past the gate: may have landed
    if log is DirectiveStatus.REFUSED:
        return steps.Elsewhere
    if log is DirectiveStatus.ISSUED:
        return steps.Refuse  # nothing recorded: refused, nothing ran
    return steps.NotStarted  # accepted or StepStarted recorded, gate never passed


@pytest.mark.parametrize("claim", [ClaimStatus.CLAIMED, ClaimStatus.STARTED])
@pytest.mark.parametrize("log", list(DirectiveStatus))
def test_every_given_up_directive_gets_a_legal_outcome_and_past_the_gate_it_is_unknown(
    log: DirectiveStatus, claim: ClaimStatus
) -> None:
    action = recovery(log, claim, prefix_known=False)
    result = given_up(action, "KeyError: 'region'")
    assert type(result) is expected(log, claim)
    # A move the step's state machine allows from where the step is (no re-run: never Go).
    phase = steps.advance(steps.RESUMED_AT[action], result)
    assert phase in steps.FINAL_PHASES
    if claim is ClaimStatus.STARTED:
        assert not isinstance(result, steps.NotStarted | steps.Refuse | steps.Failed)
    # Says why, for the commander.
    if isinstance(result, steps.Unknown):
        assert "KeyError: 'region'" in result.reason
    elif isinstance(result, steps.NotStarted):
        assert "KeyError: 'region'" in result.error
    elif isinstance(result, steps.Refuse):
        assert "KeyError: 'region'" in result.refusal.detail
