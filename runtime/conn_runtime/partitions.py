"""The one way to read a partition outside a consumer group.

A `PartitionReader` owns one group-less aiokafka consumer (`group_id=None`, no auto
commit, `read_committed`) and reads by explicit assignment and seek: it never joins a
group, commits nothing and moves no other consumer's position. Calls are serialised
(one consumer, one assignment at a time) and each read is bounded by `timeout`
(`PartitionReadTimeout`, a Kafka dependency error: the caller retries or waits).

    async with PartitionReader(kafka, name="packager-readback") as reader:
        parts = await reader.partitions(topic)              # [] if the topic is missing
        ends = await reader.end_offsets(topic)              # {partition: end}
        recs = await reader.read_range(topic, 0, 10, 20)    # offsets [10, 20)
        recs, end = await reader.read_to_end(topic, 0, 20)  # [20, end now), and that end
        async for rec in reader.iter_range(topic, 0, 0, end):  # streaming, for big ranges
            ...

Records are aiokafka `ConsumerRecord`s (they satisfy `conn_runtime.trust.RecordLike`):
what to trust is the caller's business (`Trust.open`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from conn_runtime.kafka import client_options
from conn_runtime.settings import KafkaSettings

Record: TypeAlias = ConsumerRecord[Any, Any]
BATCH = 2000


class PartitionReadTimeout(RuntimeError):
    """A read did not finish within the reader's timeout: Kafka is away or slow."""

    dependency = "kafka"


class TopicNotFound(LookupError):
    """The topic has no partitions (it does not exist yet)."""


async def topic_partitions(consumer: AIOKafkaConsumer[Any, Any], topic: str) -> set[int]:
    """Partitions of `topic` from fresh cluster metadata (works outside a subscription;
    aiokafka's public `partitions_for_topic` only reads its cached metadata)."""
    metadata = await consumer._client.fetch_all_metadata()
    return set(metadata.partitions_for_topic(topic) or ())


class PartitionReader:
    def __init__(self, kafka: KafkaSettings, *, name: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._started = False
        self._consumer: AIOKafkaConsumer[Any, Any] = AIOKafkaConsumer(
            **client_options(kafka),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id=name,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if not self._started:
            await self._consumer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._consumer.stop()

    async def __aenter__(self) -> PartitionReader:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- metadata -----------------------------------------------------------------------

    async def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, sorted ([] if it does not exist)."""
        async with self._lock, self._bounded(f"listing partitions of {topic}"):
            return sorted(await topic_partitions(self._consumer, topic))

    async def end_offsets(
        self, topic: str, partitions: Iterable[int] | None = None
    ) -> dict[int, int]:
        """{partition: offset the next record will take} (all partitions by default).
        Raises `TopicNotFound` if the topic has no partitions."""
        return await self._offsets(topic, partitions, "end")

    async def beginning_offsets(
        self, topic: str, partitions: Iterable[int] | None = None
    ) -> dict[int, int]:
        """{partition: first offset still in the log}."""
        return await self._offsets(topic, partitions, "beginning")

    async def end_offset(self, topic: str, partition: int) -> int:
        return (await self.end_offsets(topic, [partition]))[partition]

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """{partition: first offset whose timestamp is >= timestamp_ms} (the end offset
        where there is none)."""
        tps = await self._tps(topic, None)
        async with self._lock, self._bounded(f"finding offsets of {topic} by time"):
            found = await self._consumer.offsets_for_times(dict.fromkeys(tps, timestamp_ms))
            ends = await self._consumer.end_offsets(tps)
        return {
            tp.partition: (hit.offset if (hit := found.get(tp)) is not None else ends[tp])
            for tp in tps
        }

    # -- reading ------------------------------------------------------------------------

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        """Records at offsets [start, end) of one partition, in offset order (offsets
        taken by transaction markers or aborted records are simply absent)."""
        return [rec async for rec in self.iter_range(topic, partition, start, end)]

    async def read_to_end(self, topic: str, partition: int, start: int) -> tuple[list[Record], int]:
        """(records at offsets >= start up to the partition's end now, that end: where
        to continue next time). The look-ahead: what the log holds beyond a position."""
        end = await self.end_offset(topic, partition)
        if start >= end:
            return [], max(start, end)
        return await self.read_range(topic, partition, start, end), end

    async def iter_range(
        self, topic: str, partition: int, start: int, end: int
    ) -> AsyncIterator[Record]:
        """`read_range` as a stream (for large ranges). Each fetch is bounded by the
        reader's timeout; the reader is held until the iteration ends or is closed."""
        if start >= end:
            return
        tp = TopicPartition(topic, partition)
        consumer = self._consumer
        what = f"reading {topic}/{partition} [{start}, {end})"
        loop = asyncio.get_running_loop()
        async with self._lock:
            consumer.assign([tp])
            consumer.seek(tp, start)
            deadline = loop.time() + self.timeout  # moved on by every fetch that brings data
            while True:
                async with self._bounded(what):
                    batch = await consumer.getmany(
                        tp, timeout_ms=500, max_records=min(BATCH, end - start)
                    )
                    position = await consumer.position(tp)
                records = batch.get(tp, [])
                for rec in records:
                    if rec.offset >= end:
                        return
                    yield rec
                if position >= end:
                    return
                if records:
                    deadline = loop.time() + self.timeout
                elif loop.time() > deadline:
                    raise PartitionReadTimeout(f"{what}: no progress for {self.timeout}s")

    # -- internals ----------------------------------------------------------------------

    def _bounded(self, what: str) -> _Bounded:
        return _Bounded(self.timeout, what)

    async def _tps(self, topic: str, partitions: Iterable[int] | None) -> list[TopicPartition]:
        parts = sorted(partitions) if partitions is not None else await self.partitions(topic)
        if not parts:
            raise TopicNotFound(f"topic {topic!r} does not exist")
        return [TopicPartition(topic, p) for p in parts]

    async def _offsets(
        self, topic: str, partitions: Iterable[int] | None, which: str
    ) -> dict[int, int]:
        tps = await self._tps(topic, partitions)
        async with self._lock, self._bounded(f"reading {which} offsets of {topic}"):
            if which == "end":
                found = await self._consumer.end_offsets(tps)
            else:
                found = await self._consumer.beginning_offsets(tps)
        return {tp.partition: int(off) for tp, off in found.items()}


class _Bounded:
    """`asyncio.timeout` that raises `PartitionReadTimeout` naming what timed out."""

    def __init__(self, seconds: float, what: str) -> None:
        self.what = what
        self.seconds = seconds
        self._cm = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._cm.__aexit__(exc_type, exc, tb)
        except TimeoutError as err:
            raise PartitionReadTimeout(f"{self.what} took over {self.seconds}s") from err
