"""The API's own fold of the log: every partition of `conn.events` and
`conn.control`, read from offset 0 outside any consumer group.

Decisions (`decide`, `check_control`) run against this fold; reads are served
from it. Read-your-writes: after appending, `wait_applied(position)` waits
(bounded) until the fold has applied that record, and reports the incident
ledger sequence it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from conn_api.backlog import Backlog
from conn_core.chain import GENESIS, link
from conn_core.state import IncidentState
from conn_runtime.folds import IncidentFolds
from conn_runtime.kafka import Consumed, EventLoop, EventProducer, Position
from conn_runtime.partitions import PartitionReader
from conn_runtime.resilience import Dependencies, Watchdog
from conn_runtime.settings import KafkaSettings
from conn_schemas.codec import to_raw
from conn_schemas.events import GLOBAL_INCIDENT, Envelope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerEntry:
    sequence: int
    hash: str
    position: Position
    event: Envelope

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "hash": self.hash,
            "position": {
                "topic": self.position.topic,
                "partition": self.position.partition,
                "offset": self.position.offset,
            },
            "event": to_raw(self.event),
        }


class LogView:
    def __init__(
        self,
        kafka: KafkaSettings,
        producer: EventProducer,
        *,
        deps: Dependencies | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.topics = kafka.topics
        self.folds = IncidentFolds()
        self.ledgers: dict[str, list[LedgerEntry]] = {}
        self.control_log: list[LedgerEntry] = []
        self._applied: dict[tuple[str, int], int] = {}
        self._by_event: dict[str, LedgerEntry] = {}
        self._waiters: list[tuple[tuple[str, int], int, asyncio.Future[None]]] = []
        self._assigned: set[TopicPartition] | None = None
        self._caught: set[TopicPartition] = set()
        self.caught_up = asyncio.Event()
        self.backlog = Backlog()
        """Directives folded whose outcome is not yet (load shedding, conn_api.backlog)."""
        self.loop = EventLoop(
            kafka,
            group_id=None,
            topics=[self.topics.events, self.topics.control],
            handler=self._on_record,
            producer=producer,
            name="directive-api-view",
            catch_up=True,
            on_assigned=self._on_assigned,
            on_caught_up=self._on_caught_up,
            dead_letter=False,
            deps=deps,
            watchdog=watchdog,
        )
        self._task: asyncio.Task[None] | None = None
        # Asks the broker where a partition ends (after an unacknowledged append).
        self._reader = PartitionReader(kafka, name="directive-api-view-ends", timeout=10.0)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self._reader.start()
        await self.loop.start()
        self._task = asyncio.create_task(self.loop.run(), name="directive-api-view")

    async def stop(self) -> None:
        self.loop.stop_soon()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        with contextlib.suppress(Exception):
            await self.loop.stop()
        with contextlib.suppress(Exception):
            await self._reader.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self.loop.ready

    async def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        # The loop reports empty partitions as caught up *before* this callback.
        self._assigned = set(partitions)
        self._check_caught_up()

    async def _on_caught_up(self, partitions: set[TopicPartition]) -> None:
        self._caught.update(partitions)
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if self._assigned is not None and self._assigned <= self._caught:
            if not self.caught_up.is_set():
                log.info("fold caught up", extra={"incidents": len(self.folds.states)})
            self.caught_up.set()

    # -- folding -----------------------------------------------------------------------

    async def _on_record(self, consumed: Consumed) -> None:
        event = consumed.event
        pos = consumed.position
        if self.folds.apply(consumed):
            self.backlog.observe(
                event.event_type, event.correlation_id, event.occurred_at, consumed.signer_role
            )
            if event.incident_id == GLOBAL_INCIDENT:
                prev = self.control_log[-1].hash if self.control_log else GENESIS
                entry = LedgerEntry(len(self.control_log) + 1, link(prev, event), pos, event)
                self.control_log.append(entry)
            else:
                ledger = self.ledgers.setdefault(event.incident_id, [])
                prev = ledger[-1].hash if ledger else GENESIS
                state = self.folds.states[event.incident_id]
                entry = LedgerEntry(state.sequence, link(prev, event), pos, event)
                ledger.append(entry)
            self._by_event[str(event.event_id)] = entry
        key = (pos.topic, pos.partition)
        self._applied[key] = max(self._applied.get(key, -1), pos.offset)
        self._wake(key)

    def _wake(self, key: tuple[str, int]) -> None:
        applied = self._applied.get(key, -1)
        keep = []
        for wkey, offset, fut in self._waiters:
            if wkey == key and offset <= applied:
                if not fut.done():
                    fut.set_result(None)
            elif not fut.done():
                keep.append((wkey, offset, fut))
        self._waiters = keep

    async def wait_applied(self, position: Position, within: float) -> bool:
        """Wait until the record at `position` is folded (False on timeout)."""
        key = (position.topic, position.partition)
        if self._applied.get(key, -1) >= position.offset:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((key, position.offset, fut))
        try:
            await asyncio.wait_for(fut, within)
        except TimeoutError:
            return False
        return True

    async def wait_current(self, incident_id: str, within: float) -> None:
        """Best effort, no I/O: wait until everything fetched so far for the incident's
        partition is folded (bounded)."""
        ledger = self.ledgers.get(incident_id)
        if not ledger:
            return
        pos = ledger[-1].position
        tp = TopicPartition(pos.topic, pos.partition)
        high = self.loop.consumer.highwater(tp)
        if high is None or high <= 0:
            return
        await self.wait_applied(Position(pos.topic, pos.partition, high - 1), within)

    async def wait_log_end(self, incident_id: str, within: float) -> bool:
        """Wait until everything the broker holds now for the incident's partition is
        folded (asks the broker for the end offset: after an unacknowledged append,
        this tells whether it landed). False if not folded within `within`."""
        ledger = self.ledgers.get(incident_id)
        if not ledger:
            return True
        pos = ledger[-1].position
        end = await self._reader.end_offset(pos.topic, pos.partition)
        if end <= 0:
            return True
        return await self.wait_applied(Position(pos.topic, pos.partition, end - 1), within)

    # -- reads -------------------------------------------------------------------------

    def entry_for(self, event_id: str) -> LedgerEntry | None:
        return self._by_event.get(event_id)

    def state(self, incident_id: str) -> IncidentState:
        state = self.folds.states.get(incident_id)
        return state if state is not None else IncidentState(incident_id=incident_id)

    def ledger(self, incident_id: str) -> list[LedgerEntry]:
        return self.ledgers.get(incident_id, [])
