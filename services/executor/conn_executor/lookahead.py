"""Reading an incident's records *after* a position, up to the current end.

The executor handles a directive when its consumer reaches it, but the log may
already hold more: a close, a takeover, an authority change, a hold or a failing
verification appended after the directive, or (after a crash or a rebalance)
what a previous owner appended for it (DirectiveAccepted, StepStarted, an
outcome...). Immediately before a side effect, and before resuming a claim, the
executor reads the incident's partition ahead to its end with this separate,
group-less consumer and folds what it finds: it decides at the moment of acting
on everything the log knows, never on the claim row or the prefix alone.
Records of the incident can only be on its one partition
(`conn_runtime.partitioning`), so reading that partition is reading them all.
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
        events, _ = await self.read_to_end(topic, partition, start, incident_id)
        return events

    async def read_to_end(
        self, topic: str, partition: int, start: int, incident_id: str
    ) -> tuple[list[Event], int]:
        """(events of `incident_id` at offsets >= start, the partition's end offset
        they were read up to: where to continue next time)."""
        tp = TopicPartition(topic, partition)
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._read(tp, start, incident_id)
            except TimeoutError as exc:
                raise LookAheadError(
                    f"reading {topic}/{partition} from {start} took over {self.timeout}s"
                ) from exc

    async def _read(
        self, tp: TopicPartition, start: int, incident_id: str
    ) -> tuple[list[Event], int]:
        consumer = self._consumer
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[Event] = []
        if start >= end:
            return out, max(start, end)
        consumer.seek(tp, start)
        key = incident_id.encode()
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    return out, end
                if record.key != key:
                    continue
                try:
                    event = self.trust.open(record).event
                except UnreadableRecord:
                    continue  # unreadable or untrusted: the event loop dead-letters it
                if event.incident_id == incident_id:
                    out.append(event)
            if await consumer.position(tp) >= end:
                return out, end
