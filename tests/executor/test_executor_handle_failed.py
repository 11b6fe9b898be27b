"""A directive whose handling kept failing (a bug, not an outage) is closed by
`ExecutorService.handle_failed` once the runtime gives up on its record, through the
executor's real handler against real PostgreSQL (its own pool and claims), with the
Kafka producer, the log and the adapters replaced by recorders (as in
test_executor_round_trips.py). The log the look-ahead reads is what the executor
appended, as on the real topic.

Oracles (DESIGN.md, invariant 2, and the step's life cycle): the commander is never
left waiting — every case ends with an outcome in the log and the claim closed; a
failure after the fenced gate (the side effect may have happened) is reported as
StepOutcomeUnknown, never StepFailed or a refusal; before the gate, a failure once
StepStarted is in the log is StepFailed(not_started), and before anything was
recorded a DirectiveRefused; nothing is run again (the target is called at most
once).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_executor_round_trips import RESTART, RecordingProducer, Timeline, directive, executor

from conn_executor import steps
from conn_executor.claims import ClaimStatus, ClaimStore
from conn_executor.service import ExecutorService
from conn_schemas.events import Event
from conn_schemas.values import RefusalReason

pytestmark = pytest.mark.integration

DIRECTIVE_OFFSET = 7


class OwnLog:
    """The partition after the directive holds what the executor appended, in order."""

    def __init__(self, producer: RecordingProducer, timeline: Timeline) -> None:
        self.producer = producer
        self.timeline = timeline

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def read_to_end(
        self, topic: str, partition: int, start: int, incident_id: str
    ) -> tuple[list[Event], int]:
        self.timeline.add("look", f"{partition}@{start}")
        after = self.producer.events[max(0, start - DIRECTIVE_OFFSET - 1) :]
        return list(after), DIRECTIVE_OFFSET + 1 + len(self.producer.events)  # type: ignore[arg-type]


def break_at(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A bug that raises on every attempt, at `where`."""

    async def gather_fails(self: ExecutorService, step: Any) -> None:
        raise ValueError("bug before accepting")

    real_recheck = ExecutorService._recheck

    async def recheck_fails_at_gate(self: ExecutorService, step: Any, stage: str) -> Any:
        if stage == "at_gate":
            raise ValueError("bug between StepStarted and the gate")
        return await real_recheck(self, step, stage)

    def called_fails(answer: Any) -> Any:
        raise KeyError("bug after the call")

    async def claim_fails(self: ClaimStore, **_: Any) -> Any:
        raise ValueError("bug while claiming")

    if where == "before_claim":  # nothing claimed: handle_failed claims it to refuse it
        monkeypatch.setattr(ClaimStore, "claim_reading_stop", claim_fails)
    elif where == "before_accept":
        monkeypatch.setattr(ExecutorService, "_gather_before_step", gather_fails)
    elif where == "before_gate":
        monkeypatch.setattr(ExecutorService, "_recheck", recheck_fails_at_gate)
    else:
        monkeypatch.setattr(steps, "called", called_fails)


@pytest.mark.parametrize(
    ("where", "outcome", "claim_status", "calls"),
    [
        ("before_claim", ["DirectiveRefused"], ClaimStatus.REFUSED, 0),
        ("before_accept", ["DirectiveRefused"], ClaimStatus.REFUSED, 0),
        ("before_gate", ["StepFailed", "IncidentRecordUpdated"], ClaimStatus.FAILED, 0),
        ("after_gate", ["StepOutcomeUnknown", "IncidentRecordUpdated"], ClaimStatus.UNKNOWN, 1),
    ],
)
async def test_a_directive_given_up_gets_an_outcome_unknown_past_the_gate(
    fresh_database: str,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    outcome: list[str],
    claim_status: ClaimStatus,
    calls: int,
) -> None:
    timeline = Timeline()
    svc = executor(fresh_database, timeline)
    producer = svc.producer
    assert isinstance(producer, RecordingProducer)
    svc.lookahead = OwnLog(producer, timeline)  # type: ignore[assignment]
    await svc.setup()
    try:
        cid, consumed, before = await directive(svc, f"inc-{where}", RESTART, DIRECTIVE_OFFSET)
        break_at(monkeypatch, where)
        with pytest.raises((ValueError, KeyError)) as failure:
            await svc.handle(consumed, before)
        if where == "before_claim":
            assert await svc.claims.get(cid) is None
            monkeypatch.undo()  # the bug was in that handling, not in the claim statement
        appended = len(producer.events)
        await svc.handle_failed(consumed, before, failure.value)
        claim = await svc.claims.get(cid)
    finally:
        await svc.teardown()
    added = producer.events[appended:]
    assert [e.event_type for e in added] == outcome
    assert all(e.correlation_id == cid for e in added)
    assert claim is not None and claim.status is claim_status
    assert timeline.of("http").count("restart_tier") == calls, "the step was run again"
    first = added[0]
    if where in ("before_claim", "before_accept"):
        assert first.payload.reason is RefusalReason.STALE_BASE  # type: ignore[union-attr]
        assert "ValueError: bug " in first.payload.detail  # type: ignore[union-attr]
    elif where == "before_gate":
        assert first.payload.not_started  # type: ignore[union-attr]
        assert "StepStarted" in [e.event_type for e in producer.events[:appended]]
    else:
        assert "KeyError: 'bug after the call'" in first.payload.reason  # type: ignore[union-attr]
