"""Reading an incident's records *after* a position, up to the current end.

When a DirectiveIssued is delivered again after a crash or a rebalance (its
claim is already in PostgreSQL), what the previous owner appended for it
(DirectiveAccepted, StepStarted, an outcome...) sits later in the partition
than the record in hand. The executor reads ahead with this separate,
group-less consumer to learn what happened before it decides what to do;
it never guesses from the claim row alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from conn_runtime.kafka import client_options
from conn_runtime.settings import KafkaSettings
from conn_runtime.trust import trust_for
from conn_schemas.codec import UnreadableRecord
from conn_schemas.events import Event


class LookAheadError(RuntimeError):
    dependency = "kafka"
    """Reading ahead timed out: Kafka is away or slow; the handler is retried."""


class LookAhead:
    def __init__(self, settings: KafkaSettings, *, name: str, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.trust = trust_for(settings)
        self._lock = asyncio.Lock()
        self._started = False
        self._consumer: AIOKafkaConsumer[Any, Any] = AIOKafkaConsumer(
            **client_options(settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id=f"{name}-lookahead",
        )

    async def start(self) -> None:
        if not self._started:
            await self._consumer.start()
            self._started = True

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self, topic: str, partition: int, start: int, incident_id: str) -> list[Event]:
        """Trusted events of `incident_id` at offsets >= start, up to the partition's end now
        (forged or unreadable records are skipped exactly as the event loop skips them)."""
        tp = TopicPartition(topic, partition)
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._read(tp, start, incident_id)
            except TimeoutError as exc:
                raise LookAheadError(
                    f"reading {topic}/{partition} from {start} took over {self.timeout}s"
                ) from exc

    async def _read(self, tp: TopicPartition, start: int, incident_id: str) -> list[Event]:
        consumer = self._consumer
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[Event] = []
        if start >= end:
            return out
        consumer.seek(tp, start)
        key = incident_id.encode()
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    return out
                if record.key != key:
                    continue
                try:
                    event = self.trust.open(record).event
                except UnreadableRecord:
                    continue  # unreadable or untrusted: the event loop dead-letters it
                if event.incident_id == incident_id:
                    out.append(event)
            if await consumer.position(tp) >= end:
                return out
