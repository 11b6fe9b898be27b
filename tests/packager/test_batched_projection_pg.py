"""The read model written in batches is the read model written record by record, table by
table and row by row, on real PostgreSQL.

The same signed log (hypothesis histories of interleaved incidents with holds, handoffs,
published packets, takeovers, authority changes and approvals, refusals, unknown
outcomes, closes, and forged and unreadable records; and the bench generator's
incident) is projected one record per transaction by `conn replay`'s unit of work
(`conn_readmodel.replay.project_batch`), the reference; then cut into batches at
arbitrary positions, by the rebuild and by the live packager's transaction
(`store.project_records`, with packager restarts between batches: each fold seeded again
from the rows written), and one record per transaction by the live path.
`replay.compare` (what `conn replay` proves the live read model with) must find no
difference, and the tables are not empty."""

from __future__ import annotations

import uuid
from collections.abc import Set as AbstractSet
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readmodel_histories import PARTITIONS, TOPICS, bench_incidents, chunks, histories, trust

from conn_readmodel.projector import Projector
from conn_readmodel.replay import ReplayResult, compare, project_batch
from conn_readmodel.store import apply_ddl, create_pool, project_records, set_offsets

pytestmark = pytest.mark.integration


async def fresh_schema(pool: asyncpg.Pool) -> str:
    schema = f"t_batch_{uuid.uuid4().hex[:10]}"
    await apply_ddl(pool, schema)
    return schema


async def rebuilt(pool: asyncpg.Pool, records: list[Any], batches: list[list[Any]]) -> str:
    """`conn replay`'s rebuild, one transaction per batch."""
    schema = await fresh_schema(pool)
    projector = Projector(trust(), partitions=PARTITIONS)
    result = ReplayResult()
    built: dict[tuple[str, int], str] = {}
    async with pool.acquire() as conn:
        for batch in batches:
            await project_batch(conn, schema, TOPICS.events, projector, batch, result, built)
    assert result.records == len(records)
    return schema


async def live(pool: asyncpg.Pool, batches: list[list[Any]], restarts: AbstractSet[int]) -> str:
    """The live packager's transaction (`store.project_records` + the offsets), one per
    batch; before the batches in `restarts` the packager restarts: a new projector,
    every fold seeded again from the rows written."""
    schema = await fresh_schema(pool)
    projector = Projector(trust(), partitions=PARTITIONS)
    async with pool.acquire() as conn:
        for k, batch in enumerate(batches):
            if k in restarts:
                projector = Projector(trust(), partitions=PARTITIONS)
            async with conn.transaction():
                outcomes, _ = await project_records(conn, schema, projector, batch)
                assert len(outcomes) == len(batch)
                await set_offsets(
                    conn, schema, TOPICS.events, {r.partition: r.offset + 1 for r in batch}
                )
    return schema


async def same_read_model(
    dsn: str, records: list[Any], cuts: list[int], restarts: AbstractSet[int] = frozenset()
) -> None:
    pool = await create_pool(dsn)
    try:
        one_by_one = await rebuilt(pool, records, [[r] for r in records])
        schemas = [
            await rebuilt(pool, records, chunks(records, cuts)),
            await live(pool, chunks(records, cuts), restarts),
            await live(pool, [[r] for r in records], set()),
        ]
        for schema in schemas:
            assert await compare(pool, one_by_one, schema) == [], schema
        entries = await pool.fetchval(f"SELECT count(*) FROM {one_by_one}.ledger_entries")
        assert entries > 0
        for schema in (one_by_one, *schemas):
            await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await pool.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    histories(),
    st.lists(st.integers(0, 400), max_size=20),
    st.sets(st.integers(1, 20), max_size=4),
)
async def test_batched_and_record_by_record_read_models_are_equal(
    fresh_database: str, records: list[Any], cuts: list[int], restarts: set[int]
) -> None:
    await same_read_model(fresh_database, records, cuts, restarts)


async def test_the_bench_history_in_batches_equals_record_by_record(fresh_database: str) -> None:
    records = bench_incidents(4)
    await same_read_model(fresh_database, records, list(range(0, len(records), 37)), {2, 5})
