"""The executor's life cycle, pure: what to do with a claim left unfinished, for
every combination of what the log and the claim say (invariant 2: never re-run
blindly, never lose a step, never call "failed" what may have landed)."""

from __future__ import annotations

import itertools

import pytest

from conn_core.state import DirectiveStatus
from conn_executor.lifecycle import FINAL, TRANSITIONS, ClaimStatus, Recovery, recovery

OPEN = [ClaimStatus.CLAIMED, ClaimStatus.STARTED]


def test_a_claim_past_the_gate_is_never_decided_again_or_run() -> None:
    for log in DirectiveStatus:
        action = recovery(log, ClaimStatus.STARTED, prefix_known=True)
        if log in (
            DirectiveStatus.SUCCEEDED,
            DirectiveStatus.FAILED,
            DirectiveStatus.OUTCOME_UNKNOWN,
        ):
            assert action is Recovery.FINISH_FROM_LOG
        else:  # even if a fenced-out executor refused it in the log meanwhile
            assert action is Recovery.OUTCOME_UNKNOWN, log


def test_started_in_the_log_but_not_at_the_gate_ran_nothing() -> None:
    assert recovery(DirectiveStatus.STARTED, ClaimStatus.CLAIMED, prefix_known=True) is (
        Recovery.NOT_STARTED
    )


@pytest.mark.parametrize("prefix_known", [True, False])
def test_nothing_recorded(prefix_known: bool) -> None:
    expected = Recovery.DECIDE if prefix_known else Recovery.REFUSE_RESTARTED
    assert recovery(DirectiveStatus.ISSUED, ClaimStatus.CLAIMED, prefix_known=prefix_known) is (
        expected
    )


def test_accepted_never_started_continues_and_recorded_outcomes_close_the_claim() -> None:
    assert recovery(DirectiveStatus.ACCEPTED, ClaimStatus.CLAIMED, prefix_known=False) is (
        Recovery.CONTINUE
    )
    for log in (DirectiveStatus.REFUSED, DirectiveStatus.SUCCEEDED, DirectiveStatus.FAILED):
        assert recovery(log, ClaimStatus.CLAIMED, prefix_known=True) is Recovery.FINISH_FROM_LOG


def test_only_a_step_that_may_have_run_is_ever_reported_unknown() -> None:
    for log, claim, known in itertools.product(DirectiveStatus, OPEN, [True, False]):
        action = recovery(log, claim, prefix_known=known)
        if action is Recovery.OUTCOME_UNKNOWN:
            assert claim is ClaimStatus.STARTED
        if action in (Recovery.DECIDE, Recovery.CONTINUE):
            assert claim is ClaimStatus.CLAIMED, "never run twice"


def test_final_claims_are_not_recovered() -> None:
    for claim in FINAL:
        with pytest.raises(ValueError, match="final"):
            recovery(DirectiveStatus.ISSUED, claim, prefix_known=True)
        assert TRANSITIONS[claim] == frozenset()
    assert ClaimStatus.STARTED not in TRANSITIONS[ClaimStatus.STARTED]
    assert ClaimStatus.CLAIMED not in set().union(*TRANSITIONS.values())
