"""Round trips per step (issue 17, item 2), counted, not timed.

One consequential directive (restart a dependency tier) and one gather_state are run
through the executor's real handler against real PostgreSQL (the executor's own pool,
made by its own `setup`), with the Kafka producer, the log look-ahead and the adapters
replaced by recorders. Every statement asyncpg sends (the reset query included) is
recorded by a query logger on each pooled connection, in one timeline with the appends,
the look-aheads and the adapter calls. Counted on the second step of each kind, with
asyncpg's statement cache warm (a cold statement costs one more round trip, Parse,
which the logger cannot see).

Oracles (DESIGN.md, invariants 2, 5, 7):
- the events appended are the same, in the same order, as the contract lists for the
  step (StateGathered pre_step, DirectiveAccepted, StepStarted, StepSucceeded,
  IncidentRecordUpdated);
- StepStarted is acknowledged before the gate, and the gate (the fenced claim
  transition that also reads the stops table) is the last PostgreSQL statement before
  the side effect, with only the look at the log after it;
- the counts are what `ROUND_TRIPS` says, so a round trip added back fails the test.
  Before issue 17's item 2 a restart took 5 statements + 5 reset queries (10
  PostgreSQL round trips) and 5 acknowledged appends; after: 3 statements, no reset,
  4 acknowledged appends. The target is read once before the step (the pre-step
  gather), not a second time for the undo: the undo recorded with StepStarted is the
  inverse of the state StateGathered(pre_step) holds (5 -> 4 adapter calls).
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from round_trips import Timeline, is_reset, logging_pools

from conn_adapters.config import Adapters, AdapterSettings
from conn_core.fold import fold
from conn_core.undo import undo_for
from conn_executor.containment import Containment
from conn_executor.service import ExecutorService
from conn_executor.settings import ExecutorSettings
from conn_runtime.folds import IncidentFolds
from conn_runtime.kafka import Consumed, Position
from conn_runtime.resilience import Dependencies
from conn_runtime.settings import DatabaseSettings
from conn_runtime.stops import GLOBAL_SCOPE, set_stop
from conn_schemas.events import DirectiveRefused, Envelope, Event
from conn_schemas.observations import (
    ActionResult,
    FlagRuleState,
    MetricsReading,
    RecordNoteResult,
    TierState,
    WorkerPoolState,
)
from conn_schemas.values import GatherState, RefusalReason, RestartDependencyTier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from builders import History

pytestmark = pytest.mark.integration

RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")

ROUND_TRIPS = {
    # kind: (PostgreSQL statements incl. resets, acknowledged appends, log looks, adapter calls)
    "restart": (3, 4, 3, 4),
    "gather_state": (2, 2, 0, None),  # its reads (one per runbook target) run concurrently
}


class RecordingProducer:
    """An acknowledged append: one wait per `append`, one per `append_many` (its records
    go out together; all are acknowledged when it returns)."""

    principal = "executor"

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.events: list[Envelope] = []

    async def append(self, event: Envelope) -> Position:
        self.timeline.add("append", event.event_type)
        self.events.append(event)
        return Position("t", 0, len(self.events))

    async def append_many(self, events: Iterable[Envelope]) -> list[Position]:
        batch = list(events)
        self.timeline.add("append", "+".join(e.event_type for e in batch))
        self.events.extend(batch)
        return [Position("t", 0, len(self.events)) for _ in batch]


class RecordingLookAhead:
    """The log after the directive holds nothing new (one fetch per look)."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def read_to_end(
        self, topic: str, partition: int, start: int, incident_id: str
    ) -> tuple[list[Event], int]:
        self.timeline.add("look", f"{partition}@{start}")
        return [], start


class RecordingTarget:
    """Every adapter port at once, answering healthy; each call is one HTTP round trip."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.generation = 3

    def _call(self, name: str) -> datetime:
        self.timeline.add("http", name)
        return datetime.now(UTC)

    async def get_rule(self, flag: str, rule: str, region: str) -> FlagRuleState:
        at = self._call("get_rule")
        return FlagRuleState(flag=flag, rule=rule, region=region, enabled=True, observed_at=at)

    async def get_pool(self, pool: str, region: str) -> WorkerPoolState:
        at = self._call("get_pool")
        return WorkerPoolState(
            pool=pool, region=region, desired_replicas=4, ready_replicas=4, observed_at=at
        )

    async def get_tier(self, tier: str, region: str) -> TierState:
        at = self._call("get_tier")
        return TierState(
            tier=tier, region=region, healthy=True, generation=self.generation, observed_at=at
        )

    async def read_region(self, region: str) -> MetricsReading:
        at = self._call("read_region")
        return MetricsReading(
            region=region, error_rate=0.01, queue_depth=5, request_rate=100, observed_at=at
        )

    async def restart_tier(self, tier: str, region: str, *, idempotency_key: str) -> ActionResult:
        self._call("restart_tier")
        self.generation += 1
        return ActionResult(
            idempotency_key=idempotency_key,
            changed=True,
            before={"generation": self.generation - 1},
            after={"generation": self.generation},
        )

    async def append_note(
        self, incident_id: str, summary: str, *, idempotency_key: str
    ) -> RecordNoteResult:
        self._call("append_note")
        return RecordNoteResult(idempotency_key=idempotency_key, delivered=True)


class FakeLoop:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()

    def generation(self) -> int:
        return 1


def executor(dsn: str, timeline: Timeline) -> ExecutorService:
    """The executor's handler as it runs in the service, minus Kafka and the adapters."""
    svc = ExecutorService.__new__(ExecutorService)
    svc.settings = ExecutorSettings(id="x-round-trips", group_id="g")
    svc.database = DatabaseSettings(database_url=dsn)
    svc.adapter_settings = AdapterSettings()
    svc.faults = svc.settings.faults
    target = RecordingTarget(timeline)
    svc._adapters = Adapters(
        flags=target,  # type: ignore[arg-type]
        orchestrator=target,  # type: ignore[arg-type]
        metrics=target,  # type: ignore[arg-type]
        record=target,  # type: ignore[arg-type]
    )
    svc._pool = None
    svc._claims = None
    svc._gatherer = None
    svc._sweeper = None
    svc.lookahead = RecordingLookAhead(timeline)  # type: ignore[assignment]
    svc._locks = defaultdict(asyncio.Lock)
    svc.containment = Containment()
    svc.deps = Dependencies()
    svc.folds = IncidentFolds()
    svc.loop = FakeLoop()  # type: ignore[assignment]
    svc.producer = RecordingProducer(timeline)  # type: ignore[assignment]
    return svc


async def directive(
    svc: ExecutorService, incident: str, action: Any, offset: int
) -> tuple[str, Consumed, Any]:
    history = History(incident).open().declare()
    cid = history.direct(action)
    before = fold(history.events[:-1], incident)
    event = history.events[-1]
    consumed = Consumed(event, Position("t.events", 0, offset), replaying=False)  # type: ignore[arg-type]
    return cid, consumed, before


async def settle() -> None:
    """Query loggers are called soon after the statement (call_soon): let them run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def run_step(
    svc: ExecutorService, timeline: Timeline, incident: str, action: Any, offset: int
) -> tuple[str, list[tuple[str, str]]]:
    cid, consumed, before = await directive(svc, incident, action, offset)
    await settle()
    mark = len(timeline.entries)
    await svc.handle(consumed, before)
    await settle()
    return cid, timeline.entries[mark:]


def counts(entries: list[tuple[str, str]]) -> tuple[int, int, int, int]:
    by = defaultdict(int)
    for kind, _ in entries:
        by[kind] += 1
    return by["pg"], by["append"], by["look"], by["http"]


async def test_round_trips_per_step_are_counted_and_keep_the_order_of_safety(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeline = Timeline()
    logging_pools(monkeypatch, timeline)
    svc = executor(fresh_database, timeline)
    await svc.setup()
    try:
        # Warm the statement cache with one step of each kind (other incidents).
        await run_step(svc, timeline, "inc-warm-1", RESTART, 1)
        await run_step(svc, timeline, "inc-warm-2", GatherState(), 2)
        producer = svc.producer
        assert isinstance(producer, RecordingProducer)

        appended_before = len(producer.events)
        cid, restart = await run_step(svc, timeline, "inc-rt-1", RESTART, 3)
        restart_events = [e.event_type for e in producer.events[appended_before:]]
        appended_before = len(producer.events)
        _, gather = await run_step(svc, timeline, "inc-rt-2", GatherState(), 4)
        gather_events = [e.event_type for e in producer.events[appended_before:]]
    finally:
        await svc.teardown()

    print("restart timeline:", *restart, sep="\n  ")
    print("gather_state timeline:", *gather, sep="\n  ")
    print("restart (pg, appends, looks, http):", counts(restart))
    print("gather_state (pg, appends, looks, http):", counts(gather))

    # The contract's events, in its order, for each step.
    assert restart_events == [
        "StateGathered",
        "DirectiveAccepted",
        "StepStarted",
        "StepSucceeded",
        "IncidentRecordUpdated",
    ]
    assert gather_events == ["DirectiveAccepted", "StateGathered"]
    assert all(e.correlation_id == cid for e in producer.events[-7:-2])

    # The undo recorded with the intent is the inverse of the state the pre-step
    # gather recorded (one read of the target, not two), and it is known (reversible or
    # not), never "unreadable".
    pre_step, started = (
        e for e in producer.events[-7:-2] if e.event_type in ("StateGathered", "StepStarted")
    )
    (tier,) = pre_step.payload.observation.tiers  # type: ignore[union-attr]
    assert started.payload.undo == undo_for(RESTART, tier)  # type: ignore[union-attr]
    http_calls = [what for kind, what in restart if kind == "http"]
    assert sorted(http_calls) == ["append_note", "get_tier", "read_region", "restart_tier"]

    # Intent, then the gate, then only a look at the log, then the side effect.
    acting = restart.index(("http", "restart_tier"))
    before_acting = [e for e in restart[:acting] if e[0] != "http" and not is_reset(e[1])]
    gate = before_acting[-2]
    assert gate[0] == "pg" and "status = 'started'" in gate[1] and "conn_stops" in gate[1], gate
    assert before_acting[-1][0] == "look"  # the re-check after the gate
    intent = max(i for i, (k, w) in enumerate(restart) if k == "append" and "StepStarted" in w)
    assert intent < restart.index(gate)

    # No reset query on release, and the counts.
    assert not [s for s in timeline.of("pg") if is_reset(s)], "a reset round trip per release"
    pg, appends, looks, http = counts(restart)
    assert (pg, appends, looks, http) == ROUND_TRIPS["restart"]
    pg, appends, looks, _ = counts(gather)
    assert (pg, appends, looks) == ROUND_TRIPS["gather_state"][:3]


@pytest.mark.parametrize("scope", ["incident", "kill_switch"])
async def test_a_stop_read_with_the_claim_refuses_the_step_without_a_second_query(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    """The stops table is read in the claim's own statement: a hold on the incident
    (or the kill switch) committed before the directive is handled refuses it before
    anything is accepted or touched, and no separate stop query is sent."""
    timeline = Timeline()
    logging_pools(monkeypatch, timeline)
    svc = executor(fresh_database, timeline)
    await svc.setup()
    try:
        assert svc._pool is not None
        incident = "inc-held"
        await set_stop(
            svc._pool,
            GLOBAL_SCOPE if scope == "kill_switch" else incident,
            engaged=True,
            reason="held by alice",
            changed_by="alice",
            changed_at=datetime.now(UTC),
        )
        producer = svc.producer
        assert isinstance(producer, RecordingProducer)
        _, entries = await run_step(svc, timeline, incident, RESTART, 1)
    finally:
        await svc.teardown()
    refusals = [e for e in producer.events if isinstance(e, DirectiveRefused)]
    assert [e.event_type for e in producer.events] == ["DirectiveRefused"]
    expected = RefusalReason.KILL_SWITCH if scope == "kill_switch" else RefusalReason.ON_HOLD
    assert refusals[0].payload.reason is expected, refusals[0].payload
    assert not [e for e in entries if e[0] == "http"], "the target was touched"
    statements = [w for k, w in entries if k == "pg"]
    assert len(statements) == 2, statements  # the claim (with the stop), its close
    assert "INSERT INTO executor_claims" in statements[0] and "conn_stops" in statements[0]
