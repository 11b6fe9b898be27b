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
import contextlib
import logging

from aiokafka.errors import KafkaError

from conn_runtime.partitions import PartitionReader, PartitionReadTimeout, TopicNotFound
from conn_runtime.settings import KafkaSettings
from conn_runtime.trust import trust_for
from conn_schemas.codec import UnreadableRecord
from conn_schemas.events import Event

log = logging.getLogger(__name__)


class LookAheadError(RuntimeError):
    dependency = "kafka"
    """Reading ahead timed out: Kafka is away or slow; the handler is retried."""


class LookAhead:
    """The executor's look-ahead over the runtime's one partition reader."""

    def __init__(self, settings: KafkaSettings, *, name: str, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.trust = trust_for(settings)
        self._reader = PartitionReader(settings, name=f"{name}-lookahead", timeout=timeout)
        self._warming: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        await self._reader.stop()

    def warm(self, topic: str, partitions: list[int]) -> None:
        """Best effort, in the background, reading nothing: ask the partitions' end
        offsets once, so the reader's connection to their leader (a SASL handshake) and
        its metadata are made now and not by the first step's look (traced: ~100 ms
        added to the first restart after a start or an assignment). The caller does not
        wait for it; a look meanwhile waits for the reader as for any call; a failure
        here is left to the looks themselves."""
        if self._warming is not None and not self._warming.done():
            return
        self._warming = asyncio.create_task(self._warm(topic, partitions), name="lookahead-warm-up")

    async def _warm(self, topic: str, partitions: list[int]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._reader.end_offsets(topic, partitions)
        except (TimeoutError, PartitionReadTimeout, TopicNotFound, KafkaError) as exc:
            log.info("look-ahead warm-up failed", extra={"topic": topic, "error": repr(exc)})

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
        try:
            # The reader bounds each fetch ("no progress for `timeout`"); this keeps the
            # whole read within one `timeout` as well.
            async with asyncio.timeout(self.timeout):
                records, end = await self._reader.read_to_end(topic, partition, start)
        except (TimeoutError, PartitionReadTimeout) as exc:
            raise LookAheadError(
                f"reading {topic}/{partition} from {start} took over {self.timeout}s"
            ) from exc
        key = incident_id.encode()
        out: list[Event] = []
        for record in records:
            if record.key != key:
                continue
            try:
                event = self.trust.open(record).event
            except UnreadableRecord:
                continue  # unreadable or untrusted: the event loop dead-letters it
            if event.incident_id == incident_id:
                out.append(event)
        return out, end
