"""Regression (found by the fault suite): after a SIGKILL the stream's committed
offset can be ahead of the read model's `projection_offsets`. The packager must
read the skipped records back from Kafka and project them, never skip them."""

from __future__ import annotations

import asyncpg
import pytest
from packager.packager_scenario import mixed_state

from conn_packager.service import Packager
from conn_runtime.kafka import EventProducer
from conn_runtime.settings import KafkaSettings, Topics

pytestmark = pytest.mark.integration
SCHEMA = "conn_read_gap"


async def test_records_skipped_by_the_stream_are_read_back_and_projected(
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str
) -> None:
    kafka = KafkaSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        conn_topic_prefix=conn_topics.events.removesuffix("conn.events"),
    )
    script = mixed_state("inc-gap")
    async with EventProducer(kafka, producer_name="test") as producer:
        positions = [await producer.append(e) for e in script]
    partition = positions[0].partition
    assert {p.partition for p in positions} == {partition}
    raw = {p.offset: e for p, e in zip(positions, script, strict=True)}
    first, last = positions[0].offset, positions[-1].offset

    from conn_schemas.codec import encode

    packager = Packager(kafka, fresh_database, SCHEMA)
    try:
        await packager.handle(conn_topics.events, partition, first, encode(raw[first]))
        # The stream jumps to the last record: everything in between was "committed"
        # by the stream but never projected.
        handled = await packager.handle(conn_topics.events, partition, last, encode(raw[last]))
    finally:
        await packager.stop()

    assert handled is not None and handled.sequence == len(script.events)
    conn = await asyncpg.connect(fresh_database)
    try:
        seqs = [
            r["sequence"]
            for r in await conn.fetch(
                f"SELECT sequence FROM {SCHEMA}.ledger_entries WHERE incident_id='inc-gap' "
                "ORDER BY sequence"
            )
        ]
        nxt = await conn.fetchval(
            f"SELECT next_offset FROM {SCHEMA}.projection_offsets WHERE partition=$1", partition
        )
    finally:
        await conn.close()
    assert seqs == list(range(1, len(script.events) + 1))
    assert nxt == last + 1


async def test_records_never_delivered_at_the_tail_are_caught_up(
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str
) -> None:
    """No later record arrives to reveal the gap: the timer's catch_up() projects
    the tail once the read model made no progress between two calls."""
    kafka = KafkaSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        conn_topic_prefix=conn_topics.events.removesuffix("conn.events"),
    )
    script = mixed_state("inc-tail")
    async with EventProducer(kafka, producer_name="test") as producer:
        positions = [await producer.append(e) for e in script]
    partition = positions[0].partition
    first = positions[0]

    from conn_schemas.codec import encode

    packager = Packager(kafka, fresh_database, SCHEMA)
    try:
        await packager.handle(conn_topics.events, partition, first.offset, encode(script.events[0]))
        end = positions[-1].offset + 1
        assert await packager.catch_up(conn_topics.events, {partition: end}) == 0  # noted
        assert await packager.catch_up(conn_topics.events, {partition: end}) == len(positions) - 1
    finally:
        await packager.stop()
    conn = await asyncpg.connect(fresh_database)
    try:
        count = await conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.ledger_entries WHERE incident_id='inc-tail'"
        )
    finally:
        await conn.close()
    assert count == len(script.events)
