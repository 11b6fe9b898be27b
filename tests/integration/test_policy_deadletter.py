"""A record that is well-formed JSON, signed by its rightful producer, but breaks the
input policy (a control character in a title, a '..' region, the reserved global id
as an incident id) is dead-lettered with the reason, and the loop carries on with the
next good record (issue 14; DESIGN.md: malformed records go to conn.deadletter)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from kafka_support import Identities, LedgerWriter, prefix_of

from conn_runtime.kafka import Consumed, EventLoop, EventProducer
from conn_runtime.settings import Topics
from conn_schemas.codec import to_raw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from builders import History

pytestmark = pytest.mark.integration


async def test_policy_violations_are_dead_lettered_and_the_next_record_is_processed(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    settings = trust.settings(kafka_bootstrap, conn_topics, "executor")
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    good_before = writer.stamp(History("inc-policy").open().events[0])
    good_after = writer.stamp(History("inc-policy").open().events[0])
    hostile = []
    for mutate in (
        lambda raw: raw["payload"].__setitem__("title", "pwn\x1b[2J\n# Not on hold"),
        lambda raw: raw["payload"].__setitem__("service", "../eu-west"),
        lambda raw: raw.__setitem__("incident_id", "_global"),
    ):
        raw = to_raw(writer.stamp(History("inc-policy").open().events[0]))
        mutate(raw)
        hostile.append(orjson.dumps(raw))
    async with writer, EventProducer(settings, producer_name="test") as producer:
        api = await writer.producer("directive-api")
        await api.append(good_before)
        for value in hostile:
            await api.publish(conn_topics.events, b"inc-policy", value)
        await api.append(good_after)
        seen: list[Consumed] = []

        async def handler(item: Consumed) -> None:
            seen.append(item)

        loop = EventLoop(
            settings,
            group_id=f"{prefix_of(conn_topics)}conn-executor",
            topics=[conn_topics.events],
            handler=handler,
            producer=producer,
            name="policy-test",
        )
        await loop.start()
        task = asyncio.create_task(loop.run())
        try:
            async with asyncio.timeout(30):
                while len(seen) < 2:
                    await asyncio.sleep(0.05)
        finally:
            loop.stop_soon()
            await task
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
    headers = [{k: v.decode() for k, v in r.headers} for r in records]
    assert [h["dlq.reason"] for h in headers] == ["invalid"] * 3
    assert [r.value for r in records] == hostile  # nothing lost: the original bytes
    assert [int(h["dlq.source.offset"]) for h in headers] == [1, 2, 3]
    details = " | ".join(h.get("dlq.detail", "") for h in headers)
    assert "control character" in details or "title" in details, details
