"""Regression (found by the fault suite): after a SIGKILL the stream's committed
offset can be ahead of the read model's `projection_offsets`. The packager must
read the skipped records back from Kafka and project them, never skip them."""

from __future__ import annotations

import asyncpg
import pytest
from kafka_support import Identities, LedgerWriter
from packager.packager_scenario import mixed_state

from conn_packager.service import Packager
from conn_runtime.settings import Topics

pytestmark = pytest.mark.integration
SCHEMA = "conn_read_gap"


async def test_records_skipped_by_the_stream_are_read_back_and_projected(
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str, trust: Identities
) -> None:
    kafka = trust.settings(kafka_bootstrap, conn_topics, "packager")
    script = mixed_state("inc-gap")
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as writer:
        positions = [(await writer.append_at(e))[1] for e in script]
    partition = positions[0].partition
    assert {p.partition for p in positions} == {partition}
    first, last = positions[0].offset, positions[-1].offset

    packager = Packager(kafka, fresh_database, SCHEMA)
    try:
        # The records exactly as the stream delivers them (bytes and signature headers).
        records = await packager._read_range(conn_topics.events, partition, first, last + 1)
        await packager.handle(records[0])
        # The stream jumps to the last record: everything in between was "committed"
        # by the stream but never projected.
        handled = await packager.handle(records[-1])
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
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str, trust: Identities
) -> None:
    """No later record arrives to reveal the gap: the timer's catch_up() projects
    the tail once the read model made no progress between two calls."""
    kafka = trust.settings(kafka_bootstrap, conn_topics, "packager")
    script = mixed_state("inc-tail")
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as writer:
        positions = [(await writer.append_at(e))[1] for e in script]
    partition = positions[0].partition
    first = positions[0]

    packager = Packager(kafka, fresh_database, SCHEMA)
    try:
        (record,) = await packager._read_range(
            conn_topics.events, partition, first.offset, first.offset + 1
        )
        await packager.handle(record)
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
