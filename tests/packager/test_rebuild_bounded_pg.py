"""A rebuild that lets folds go (`conn_readmodel.replay.HeldFolds`: closed incidents, and
the least recently used beyond a bound) writes the read model of a rebuild that keeps
every fold, on real PostgreSQL.

The same signed log (hypothesis histories with holds, handoffs, published packets,
takeovers, authority changes, approvals, refusals, closes and records after a close,
forged and unreadable records; and the bench generator's incident) is projected one
record per transaction with every fold kept (the reference, as `conn replay` always
did), then in arbitrary batches holding at most 0 or 1 open folds: every later record of
an incident let go is projected from the fold reloaded from the rows written. The read
models must be equal table by table (`replay.compare`), the outcomes counted the same,
and folds must really have been let go and reloaded."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readmodel_histories import (
    PARTITIONS,
    TOPICS,
    bench_incidents,
    chunks,
    histories,
    incident_items,
    records,
    replay_outcome,
    trust,
)

from conn_readmodel.projector import Projector
from conn_readmodel.replay import HeldFolds, ReplayResult, compare, project_batch
from conn_readmodel.store import apply_ddl, create_pool

pytestmark = pytest.mark.integration


async def rebuilt(
    pool: asyncpg.Pool, batches: list[list[Any]], limit: int | None
) -> tuple[str, ReplayResult, HeldFolds | None]:
    """`conn replay`'s rebuild, one transaction per batch; folds bounded to `limit`
    (None: every fold kept)."""
    schema = f"t_bound_{uuid.uuid4().hex[:10]}"
    await apply_ddl(pool, schema)
    projector = Projector(trust(), partitions=PARTITIONS)
    folds = None if limit is None else HeldFolds(projector, limit)
    result = ReplayResult()
    built: dict[tuple[str, int], str] = {}
    async with pool.acquire() as conn:
        for batch in batches:
            await project_batch(
                conn, schema, TOPICS.events, projector, batch, result, built, folds=folds
            )
    return schema, result, folds


async def same_read_model(dsn: str, recs: list[Any], cuts: list[int], limit: int) -> HeldFolds:
    pool = await create_pool(dsn)
    try:
        reference, expected, _ = await rebuilt(pool, [[r] for r in recs], None)
        bounded, result, folds = await rebuilt(pool, chunks(recs, cuts), limit)
        assert await compare(pool, reference, bounded) == []
        assert replay_outcome(result) == replay_outcome(expected)
        assert await pool.fetchval(f"SELECT count(*) FROM {reference}.ledger_entries") > 0
        for schema in (reference, bounded):
            await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await pool.close()
    assert folds is not None
    return folds


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories(), st.lists(st.integers(0, 400), max_size=20), st.integers(0, 1))
async def test_letting_folds_go_leaves_the_read_model_unchanged(
    fresh_database: str, recs: list[Any], cuts: list[int], limit: int
) -> None:
    await same_read_model(fresh_database, recs, cuts, limit)


async def test_records_after_a_close_are_projected_from_the_reloaded_fold(
    fresh_database: str,
) -> None:
    """A closed incident's fold is let go once its batch commits; its later records (a
    note, a step, a hold, a forged and an unreadable record, a packet) are projected -
    or refused - as if the fold had stayed."""
    closing = incident_items(
        "inc-closes",
        ["step", "hold", "publish", "close", "note", "forged", "step", "hold", "publish"],
    )
    open_one = incident_items("inc-stays", ["mixed", "handoff", "publish", "unreadable", "step"])
    recs = records([closing, open_one], list(range(len(closing) + len(open_one))))
    # Room for both folds: only the close lets one go.
    folds = await same_read_model(fresh_database, recs, list(range(0, len(recs), 3)), 10)
    assert folds.reloads >= 1


async def test_the_bench_history_with_bounded_folds(fresh_database: str) -> None:
    recs = bench_incidents(5)
    folds = await same_read_model(fresh_database, recs, list(range(0, len(recs), 41)), 1)
    assert folds.reloads > 0
