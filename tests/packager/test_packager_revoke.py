"""A rebalance while records wait in the live packager's batcher (real Kafka, real
PostgreSQL): the partition is revoked from packager A while a batch of its records waits
in A's batcher; the new owner B resumes from the committed offset (A acked none of them)
and projects part of them; then A's projection loop (`batching.project_batches`, the loop
the app runs) takes the waiting batch. Every record must end up applied exactly once (the
read model equal to one packager projecting the records in one go), and no record acked
before the transaction that applied it (or found it applied) committed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from kafka_support import Identities, LedgerWriter
from packager.packager_scenario import mixed_state

from conn_packager.batching import Batcher, project_batches
from conn_packager.service import Packager
from conn_readmodel.store import TABLES
from conn_runtime.settings import Topics
from conn_runtime.trust import RecordLike

pytestmark = pytest.mark.integration
SCHEMA, REFERENCE = "conn_read_revoke", "conn_read_revoke_ref"


async def _rows(conn: asyncpg.Connection, schema: str) -> dict[str, list[dict[str, Any]]]:
    return {
        table: [
            dict(r)
            for r in await conn.fetch(f"SELECT * FROM {schema}.{table} ORDER BY {', '.join(keys)}")
        ]
        for table, keys in TABLES.items()
    }


async def test_records_waiting_in_the_batcher_survive_a_revoke_once_and_acked_after_commit(
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str, trust: Identities
) -> None:
    kafka = trust.settings(kafka_bootstrap, conn_topics, "packager")
    script = mixed_state("inc-revoke")
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as writer:
        positions = [(await writer.append_at(e))[1] for e in script]
    partition = positions[0].partition
    assert {p.partition for p in positions} == {partition}
    first, last = positions[0].offset, positions[-1].offset
    topic = conn_topics.events

    a, b = Packager(kafka, fresh_database, SCHEMA), Packager(kafka, fresh_database, SCHEMA)
    reference = Packager(kafka, fresh_database, REFERENCE)
    watcher = await asyncpg.connect(fresh_database)
    acked: list[tuple[int, int]] = []
    """(offset, the partition's committed next_offset when the record was acked)."""
    projected = asyncio.Event()

    def ack_of(record: RecordLike) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            committed = await watcher.fetchval(
                f"SELECT next_offset FROM {SCHEMA}.projection_offsets "
                "WHERE topic=$1 AND partition=$2",
                topic,
                partition,
            )
            acked.append((record.offset, -1 if committed is None else int(committed)))

        return ack

    try:
        records = await a._read_range(topic, partition, first, last + 1)
        assert len(records) == len(script.events)
        # A owns the partition: it projected the first record, the stream handed it the
        # rest, which wait in its batcher (its projection busy elsewhere).
        await a.handle_many(records[:1])
        batcher: Batcher[tuple[RecordLike, Callable[[], Awaitable[Any]]]] = Batcher(1000)
        for record in records[1:]:
            await batcher.put((record, ack_of(record)))
        # The rebalance: revoked from A (what the app's on_partitions_revoked does),
        # assigned to B, which resumes at the committed offset (A acked none of the
        # waiting records) and projects part of them before A's loop looks again.
        a._forget_partition(partition)
        mid = len(records) // 2
        await b.handle_many(records[1:mid])
        # A's projection loop takes the batch that waited through the revoke.
        loop = asyncio.create_task(
            project_batches(batcher, a.handle_many, lambda _: projected.set())
        )
        done = asyncio.create_task(projected.wait())
        await asyncio.wait([loop, done], return_when=asyncio.FIRST_COMPLETED)
        if loop.done():
            loop.result()  # the loop failed: raise why
        loop.cancel()
        # B carries on with the records redelivered to it: all already applied.
        assert await b.handle_many(records[mid:]) == {}
        await reference.handle_many(records)  # one packager, one batch: the reference
    finally:
        for p in (a, b, reference):
            await p.stop()

    # Not acked before commit: every ack saw the partition committed past its record.
    assert sorted(o for o, _ in acked) == [r.offset for r in records[1:]], "acked once each"
    early = [(o, c) for o, c in acked if c <= o]
    assert not early, f"acked before the batch applying them committed: {early}"
    try:
        got, want = await _rows(watcher, SCHEMA), await _rows(watcher, REFERENCE)
    finally:
        await watcher.close()
    # Neither lost nor applied twice: each record once, in order, the read model equal.
    ledger = got["ledger_entries"]
    assert [r["sequence"] for r in ledger] == list(range(1, len(script.events) + 1))
    assert [r["kafka_offset"] for r in ledger] == [r.offset for r in records]
    assert got == want
