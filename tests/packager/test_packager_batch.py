"""The live packager projects a batch of records in one transaction: a forged record inside
the batch is dead-lettered with its reason and folds nothing, and every genuine record
around it is projected (real Kafka, real PostgreSQL)."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_support import Identities, LedgerWriter
from packager.packager_scenario import mixed_state
from trust_support import forgeries

from conn_packager.service import Packager
from conn_runtime.kafka import EventProducer
from conn_runtime.partitions import topic_partitions
from conn_runtime.settings import Topics

pytestmark = pytest.mark.integration
SCHEMA = "conn_read_batch"


async def _dead_letters(
    trust: Identities, bootstrap: str, topics: Topics
) -> dict[tuple[int, int], tuple[str, str]]:
    """(source partition, offset) -> (consumer, reason) of everything in conn.deadletter
    now (read up to its end offsets)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **trust.kafka_options("sre")
    )
    await consumer.start()
    out: dict[tuple[int, int], tuple[str, str]] = {}
    try:
        tps = [
            TopicPartition(topics.deadletter, p)
            for p in await topic_partitions(consumer, topics.deadletter)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    h = {k: v.decode() for k, v in r.headers}
                    out[(int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))] = (
                        h["dlq.consumer"],
                        h["dlq.reason"],
                    )
    finally:
        await consumer.stop()
    return out


async def test_a_forged_record_inside_a_batch_is_dead_lettered_and_the_rest_projected(
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str, trust: Identities
) -> None:
    kafka = trust.settings(kafka_bootstrap, conn_topics, "packager")
    script = mixed_state("inc-batch")
    half = len(script.events) // 2
    forged = next(f for f in forgeries(script.events[0], trust.keys) if f.reason == "unsigned")
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as writer:
        positions = [(await writer.append_at(e))[1] for e in script.events[:half]]
        attacker = EventProducer(
            trust.settings(kafka_bootstrap, conn_topics, "example-integration"),
            producer_name="attacker",
        )
        await attacker.start()
        try:
            bad = await attacker.publish(
                conn_topics.events, forged.key, forged.value, forged.headers, sign=False
            )
        finally:
            await attacker.stop()
        positions += [(await writer.append_at(e))[1] for e in script.events[half:]]
    partition = positions[0].partition
    assert {p.partition for p in positions} == {partition} and bad.partition == partition
    first, last = positions[0].offset, positions[-1].offset

    packager = Packager(kafka, fresh_database, SCHEMA)
    try:
        records = await packager._read_range(conn_topics.events, partition, first, last + 1)
        assert bad.offset in {r.offset for r in records}
        handled = await packager.handle_many(records)  # one batch, one transaction
    finally:
        await packager.stop()

    genuine = [p.offset for p in positions]
    assert sorted(o for (_, _, o) in handled) == genuine
    assert [handled[(conn_topics.events, partition, o)].sequence for o in genuine] == list(
        range(1, len(script.events) + 1)
    )
    conn = await asyncpg.connect(fresh_database)
    try:
        offsets = [
            r["kafka_offset"]
            for r in await conn.fetch(
                f"SELECT kafka_offset FROM {SCHEMA}.ledger_entries "
                "WHERE incident_id='inc-batch' ORDER BY sequence"
            )
        ]
        nxt = await conn.fetchval(
            f"SELECT next_offset FROM {SCHEMA}.projection_offsets WHERE partition=$1", partition
        )
        bridge = await conn.fetchval(
            f"SELECT bridge FROM {SCHEMA}.incidents WHERE incident_id='inc-batch'"
        )
    finally:
        await conn.close()
    assert offsets == genuine and nxt == last + 1
    assert handled[(conn_topics.events, partition, last)].bridge["sequence"] == len(script.events)
    assert bridge is not None
    letters = await _dead_letters(trust, kafka_bootstrap, conn_topics)
    assert letters.get((partition, bad.offset)) == ("packager", "unsigned")
