"""The given-up path after an approval: a directive waiting for approvers is run by the
`ApprovalRecorded` that completes its quorum; when that handling keeps failing (a bug,
not an outage) and the runtime gives up on the approval's record,
`ExecutorService.handle_failed` must close the directive exactly as for a
`DirectiveIssued` given up (test_executor_handle_failed.py): through the executor's real
handler against real PostgreSQL (its own pool and claims), the Kafka producer, the log
and the adapters replaced by recorders.

Oracles (DESIGN.md, invariant 2, and the step's life cycle): the commander is never left
waiting — the directive ends with an outcome in the log and its claim closed; past the
fenced gate (the side effect may have happened) StepOutcomeUnknown, never StepFailed or
a refusal; before the gate once StepStarted is in the log StepFailed(not_started);
before anything was recorded for it DirectiveRefused; nothing is run again (the target
is called at most once) and nothing is decided again.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_executor_handle_failed import break_at
from test_executor_round_trips import RecordingProducer, Timeline, executor

from conn_core import approvals
from conn_core.fold import fold
from conn_executor.claims import ClaimStatus
from conn_runtime.kafka import Consumed, Position
from conn_schemas import events as ev
from conn_schemas.events import Event
from conn_schemas.values import RefusalReason, RestartDependencyTier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import builders
from builders import DANA, RUNBOOK, History

pytestmark = pytest.mark.integration

RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")
DIRECTIVE_OFFSET = 7
APPROVAL_OFFSET = DIRECTIVE_OFFSET + 1


def approval_required() -> bytes:
    """The shipped runbook, its approval rule moved onto the restarted tier."""
    text = RUNBOOK.read_text()
    rule = "  - action: restart_dependency_tier\n    targets: [orders-db]\n    count: 1\n"
    assert rule in text
    return text.replace(rule, rule.replace("orders-db", "pricing-cache"), 1).encode()


class Partition:
    """The incident's partition after the directive: the approval, then what the
    executor appended, in order (as on the real topic)."""

    def __init__(self, approval: ev.Envelope, producer: RecordingProducer) -> None:
        self.approval = approval
        self.producer = producer

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def read_to_end(
        self, topic: str, partition: int, start: int, incident_id: str
    ) -> tuple[list[Event], int]:
        log = [self.approval, *self.producer.events]
        end = APPROVAL_OFFSET + len(log)
        return list(log[max(0, start - APPROVAL_OFFSET) :]), end  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("where", "outcome", "claim_status", "calls"),
    [
        ("before_accept", ["DirectiveRefused"], ClaimStatus.REFUSED, 0),
        ("before_gate", ["StepFailed", "IncidentRecordUpdated"], ClaimStatus.FAILED, 0),
        ("after_gate", ["StepOutcomeUnknown", "IncidentRecordUpdated"], ClaimStatus.UNKNOWN, 1),
    ],
)
async def test_an_approved_directive_given_up_is_closed_never_run_again(
    fresh_database: str,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    outcome: list[str],
    claim_status: ClaimStatus,
    calls: int,
) -> None:
    # Events stamped a minute ago: the approval window (expires_after) is still open.
    monkeypatch.setattr(builders, "T0", datetime.now(UTC) - timedelta(minutes=1))
    inc = f"inc-approved-{where}"
    history = History(inc).open().declare(content=approval_required())
    cid = history.direct(RESTART)
    issued = history.events[-1]
    timeline = Timeline()
    svc = executor(fresh_database, timeline)
    producer = svc.producer
    assert isinstance(producer, RecordingProducer)
    await svc.setup()
    try:
        # Issued: recorded, and waiting for approvers (the claim taken, nothing appended).
        before_issue = fold(history.events[:-1], inc)
        await svc.handle(
            Consumed(issued, Position("t.events", 0, DIRECTIVE_OFFSET), replaying=False),  # type: ignore[arg-type]
            before_issue,
        )
        waiting = fold(history.events, inc)
        assert approvals.awaiting(waiting) == [cid]
        assert producer.events == []
        claim = await svc.claims.get(cid)
        assert claim is not None and not claim.final
        sha = approvals.current_sha256(waiting, cid)
        assert sha is not None
        vote = ev.new_event(
            ev.ApprovalRecorded,
            incident_id=inc,
            payload=ev.ApprovalRecordedPayload(packet_sha256=sha, detail="checked"),
            actor=DANA,
            producer="directive-api",
            correlation_id=cid,
        )
        svc.lookahead = Partition(vote, producer)  # type: ignore[assignment]
        consumed = Consumed(vote, Position("t.events", 0, APPROVAL_OFFSET), replaying=False)  # type: ignore[arg-type]

        # The quorum runs it; a bug raises at `where`, on every attempt.
        break_at(monkeypatch, where)
        with pytest.raises((ValueError, KeyError)) as failure:
            await svc.handle(consumed, waiting)
        appended = len(producer.events)
        await svc.handle_failed(consumed, waiting, failure.value)
        claim = await svc.claims.get(cid)
        # Given up twice (a redelivery of the dead-lettered record): nothing more.
        await svc.handle_failed(consumed, waiting, failure.value)
    finally:
        await svc.teardown()
    added = producer.events[appended:]
    assert [e.event_type for e in added] == outcome
    assert all(e.correlation_id == cid for e in added)
    assert claim is not None and claim.status is claim_status
    assert timeline.of("http").count("restart_tier") == calls, "the step was run again"
    first: Any = added[0]
    if where == "before_accept":
        assert first.payload.reason is RefusalReason.STALE_BASE
        assert "ValueError: bug " in first.payload.detail
        assert "DirectiveAccepted" not in [e.event_type for e in producer.events]
    elif where == "before_gate":
        assert first.payload.not_started
        assert "StepStarted" in [e.event_type for e in producer.events[:appended]]
    else:
        assert "KeyError: 'bug after the call'" in first.payload.reason
    # The outcome is the directive's last word: the fold agrees it is finished.
    final = fold([*history.events, vote, *producer.events], inc)
    assert final.directives[cid].status.value in ("refused", "failed", "outcome_unknown")
