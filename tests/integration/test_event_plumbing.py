"""The shared Kafka plumbing against the real broker: every event type round-trips
through conn.events signed by its rightful producer, unreadable and unsigned records
are dead-lettered with their reason and source, the loop carries on, and offsets are
committed only after handling."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka_support import Identities, LedgerWriter, prefix_of

from conn_runtime.kafka import Consumed, EventLoop, EventProducer
from conn_runtime.settings import KafkaSettings, Topics
from conn_schemas.codec import encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from builders import History, one_of_each

pytestmark = pytest.mark.integration


def settings_for(bootstrap: str, topics: Topics, trust: Identities) -> KafkaSettings:
    """The consuming side acts as the executor, in the executor's group."""
    return trust.settings(bootstrap, topics, "executor")


def executor_group(topics: Topics) -> str:
    return f"{prefix_of(topics)}conn-executor"


async def consume_until(
    loop: EventLoop, seen: list[Consumed], count: int, timeout: float = 30
) -> None:
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(timeout):
            while len(seen) < count:
                await asyncio.sleep(0.05)
    finally:
        loop.stop_soon()
        await task


async def test_every_event_type_round_trips_through_kafka(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    settings = settings_for(kafka_bootstrap, conn_topics, trust)
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    events = []
    async with writer, EventProducer(settings, producer_name="test") as producer:
        for event in one_of_each():
            topic = conn_topics.control if event.incident_id == "_global" else None
            events.append(await writer.append(event, topic=topic))
        seen: list[Consumed] = []

        async def handler(item: Consumed) -> None:
            seen.append(item)

        loop = EventLoop(
            settings,
            group_id=executor_group(conn_topics),
            topics=[conn_topics.events, conn_topics.control],
            handler=handler,
            producer=producer,
            name="roundtrip",
        )
        await loop.start()
        try:
            await consume_until(loop, seen, len(events))
        finally:
            await loop.stop()
    assert sorted((c.event for c in seen), key=lambda e: str(e.event_id)) == sorted(
        events, key=lambda e: str(e.event_id)
    )
    # Each incident's events arrive in the order they were appended.
    per_incident = [c.event for c in seen if c.event.incident_id == "inc-every"]
    assert per_incident == [e for e in events if e.incident_id == "inc-every"]
    # Each reached the handler with the principal whose signature it carries.
    assert {c.signer for c in seen} == {e.producer for e in events}
    assert all(c.signer == c.event.producer for c in seen)


async def test_unreadable_records_are_dead_lettered_and_the_loop_carries_on(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    settings = settings_for(kafka_bootstrap, conn_topics, trust)
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    good_before, good_after = (
        writer.stamp(History("inc-dlq").open().events[0]),
        writer.stamp(History("inc-dlq").open().events[0]),
    )
    async with writer, EventProducer(settings, producer_name="test") as producer:
        api = await writer.producer("directive-api")
        await api.append(good_before)
        # Signed, but not a Conn event (the signature is checked first, then the bytes).
        await api.publish(conn_topics.events, b"inc-dlq", b"{definitely not json")
        await api.publish(
            conn_topics.events, b"inc-dlq", b'{"event_type": "Teleported", "schema_version": 1}'
        )
        # A well-formed event nobody signed.
        unsigned = writer.stamp(History("inc-dlq").open().events[0])
        await api.publish(conn_topics.events, b"inc-dlq", encode(unsigned), sign=False)
        await api.append(good_after)
        seen: list[Consumed] = []

        async def handler(item: Consumed) -> None:
            seen.append(item)

        loop = EventLoop(
            settings,
            group_id=executor_group(conn_topics),
            topics=[conn_topics.events],
            handler=handler,
            producer=producer,
            name="dlq-test",
        )
        await loop.start()
        try:
            await consume_until(loop, seen, 2)
        finally:
            await loop.stop()
    assert [c.event.event_id for c in seen] == [good_before.event_id, good_after.event_id]

    dlq = AIOKafkaConsumer(
        conn_topics.deadletter,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        **trust.kafka_options("sre"),
    )
    await dlq.start()
    try:
        records = []
        async with asyncio.timeout(20):
            while len(records) < 3:
                batch = await dlq.getmany(timeout_ms=500)
                for recs in batch.values():
                    records.extend(recs)
    finally:
        await dlq.stop()
    headers = [dict((k, v.decode()) for k, v in r.headers) for r in records]
    assert [h["dlq.reason"] for h in headers] == ["not_json", "unknown_event_type", "unsigned"]
    assert all(h["dlq.source.topic"] == conn_topics.events for h in headers)
    assert [int(h["dlq.source.offset"]) for h in headers] == [1, 2, 3]
    assert records[0].value == b"{definitely not json"  # nothing lost: the original bytes
    assert records[2].value == encode(unsigned)
    # Dead letters are not re-signed by the consumer; the source's signature travels along.
    assert "conn-sig" not in headers[0] and "dlq.source.conn-sig" in headers[0]


async def test_offsets_are_committed_only_after_handling(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    """A handler that fails is retried (the record is not skipped) and the
    committed offset never runs ahead of the work."""
    settings = settings_for(kafka_bootstrap, conn_topics, trust)
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    async with writer, EventProducer(settings, producer_name="test") as producer:
        await writer.append_many(History("inc-retry").open().declare().events)
        attempts: list[str] = []
        seen: list[Consumed] = []

        async def flaky(item: Consumed) -> None:
            attempts.append(item.event.event_type)
            if (
                item.event.event_type == "AuthorityDeclared"
                and attempts.count("AuthorityDeclared") < 3
            ):
                raise RuntimeError("database briefly unavailable")
            seen.append(item)

        loop = EventLoop(
            settings,
            group_id=executor_group(conn_topics),
            topics=[conn_topics.events],
            handler=flaky,
            producer=producer,
            name="retry",
        )
        await loop.start()
        try:
            await consume_until(loop, seen, 2)
            committed = {tp: await loop.consumer.committed(tp) for tp in loop.consumer.assignment()}
        finally:
            await loop.stop()
    assert [c.event.event_type for c in seen] == ["IncidentOpened", "AuthorityDeclared"]
    assert attempts.count("AuthorityDeclared") == 3
    assert sum(v or 0 for v in committed.values()) == 2
