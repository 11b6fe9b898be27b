"""The fold turns verdicts into holds and the one-step gate (no I/O)."""

from __future__ import annotations

import pytest
from builders import ALICE, History

from conn_core.fold import fold
from conn_core.rules import Accepted, Refused, decide
from conn_core.state import ControlState
from conn_schemas.events import DirectiveIssuedPayload
from conn_schemas.values import (
    DisableFlagRule,
    DrainWorkerPool,
    HoldReason,
    RefusalReason,
    Verdict,
)

DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")


def after_step(verdict: Verdict | None) -> History:
    h = History().open().declare()
    cid = h.direct(DISABLE, cid="step-1")
    h.accept(cid, DISABLE)
    h.start(cid, DISABLE)
    h.succeed(cid, DISABLE)
    if verdict is not None:
        h.snapshot(cid, verdict)
    return h


def next_drain(h: History) -> Accepted | Refused:
    state = fold(h.events, h.incident_id)
    payload = DirectiveIssuedPayload(action=DRAIN, based_on_sequence=state.sequence)
    return decide(state, payload, ALICE, ControlState())


@pytest.mark.parametrize(
    "verdict",
    [Verdict.NOT_RECOVERED, Verdict.CONFLICT, Verdict.STALE_METRICS, Verdict.MIXED],
)
def test_any_verdict_but_recovered_holds_and_refuses_the_next_step(verdict: Verdict) -> None:
    h = after_step(verdict)
    state = fold(h.events, h.incident_id)
    assert state.hold is not None and state.hold.reason is HoldReason.VERIFICATION
    assert state.hold.correlation_id == "step-1"
    assert state.directives["step-1"].verdict is verdict
    decision = next_drain(h)
    assert isinstance(decision, Refused) and decision.reason is RefusalReason.ON_HOLD
    h.resume()
    assert isinstance(next_drain(h), Accepted), "an explicit resume releases the hold"


def test_unverified_step_blocks_the_next_until_recovered() -> None:
    h = after_step(None)
    decision = next_drain(h)
    assert isinstance(decision, Refused) and decision.reason is RefusalReason.STEP_UNVERIFIED
    h.snapshot("step-1", Verdict.RECOVERED)
    state = fold(h.events, h.incident_id)
    assert state.hold is None and state.open_step is None
    assert isinstance(next_drain(h), Accepted)


def test_fold_remembers_snapshots_and_step_results() -> None:
    h = after_step(None)
    state = fold(h.events, h.incident_id)
    assert state.snapshot_correlations == set()
    assert state.directives["step-1"].result is not None
    assert state.directives["step-1"].result.idempotency_key == "step-1"
    h.snapshot("step-1", Verdict.RECOVERED)
    assert fold(h.events, h.incident_id).snapshot_correlations == {"step-1"}
