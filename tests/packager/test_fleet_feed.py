"""The packager's fleet gauges are fed incrementally (`conn_packager.fleet.LedgerFeed`: each
refresh reads only the ledger entries written since the previous one). Its report must
equal the whole-ledger report (`conn_readmodel.queries.fleet_report`, and
`conn_core.fleet.fleet_report` of the events) after every growth, across interleaved
incidents and a duplicate, and after the read model was rebuilt with other events under
it (real PostgreSQL; rows written by the projection's own batch writer)."""

from __future__ import annotations

from itertools import zip_longest

import asyncpg
import pytest
from packager.packager_scenario import mixed_state, recovered

from conn_core import fleet
from conn_packager.fleet import LedgerFeed
from conn_readmodel import queries as readmodel
from conn_readmodel.projection import BatchRows, IncidentProjection, Where, project_event
from conn_readmodel.store import apply_ddl, create_pool, write_batch
from conn_schemas.events import Envelope, IncidentClosed, IncidentClosedPayload

pytestmark = pytest.mark.integration
SCHEMA = "conn_read_feed"


class Ledger:
    """Writes events to the read model as the packager does (folds kept per incident)."""

    def __init__(self) -> None:
        self.folds: dict[str, IncidentProjection] = {}
        self.offset = 0

    async def write(self, pool: asyncpg.Pool, events: list[Envelope]) -> None:
        batch = BatchRows()
        for event in events:
            proj = self.folds.setdefault(
                event.incident_id, IncidentProjection.new(event.incident_id)
            )
            batch.add(proj, project_event(proj, event, Where("events", 0, self.offset)))
            self.offset += 1
        async with pool.acquire() as conn, conn.transaction():
            await write_batch(conn, SCHEMA, batch)


async def test_the_incremental_feed_equals_the_whole_ledger_report(fresh_database: str) -> None:
    pool = await create_pool(fresh_database)
    try:
        await apply_ddl(pool, SCHEMA)
        ok = recovered("inc-ok")
        ok.add(IncidentClosed, IncidentClosedPayload(resolution="drained, recovered"))
        scripts = [mixed_state("inc-mixed"), ok, recovered("inc-handoff", handoff=True)]
        # interleaved, a few events at a time, with a duplicate (same event_id)
        stream = [
            e for group in zip_longest(*(s.events for s in scripts)) for e in group if e is not None
        ]
        stream.insert(len(stream) // 2, ok.events[3])
        chunks = [stream[i : i + 4] for i in range(0, len(stream), 4)]
        feed, ledger, written = LedgerFeed(SCHEMA), Ledger(), []
        assert not await feed.refresh(pool)  # nothing yet
        for chunk in chunks:
            await ledger.write(pool, chunk)
            written += chunk
            assert await feed.refresh(pool)
            report = feed.report()
            assert report == await readmodel.fleet_report(pool, schema=SCHEMA)
            assert report == fleet.fleet_report(written)
            assert not await feed.refresh(pool)  # unchanged: nothing read, nothing redone
        assert feed.restarts == 0
        assert feed.report()["totals"]["incidents"] == 3
        assert len(written) == sum(len(s.events) for s in scripts) + 1

        # The read model rebuilt under the running feed, with other events: as long or
        # longer, another chain. The feed must notice and start over, not keep counting
        # the events it saw before.
        async with pool.acquire() as conn:
            await conn.execute(f"TRUNCATE {SCHEMA}.ledger_entries, {SCHEMA}.incidents")
        rebuilt = recovered("inc-mixed")  # same incident id, another history
        rebuilt.add(IncidentClosed, IncidentClosedPayload(resolution="rebuilt"))
        await Ledger().write(pool, rebuilt.events)
        assert await feed.refresh(pool)
        assert feed.restarts == 1
        assert feed.report() == await readmodel.fleet_report(pool, schema=SCHEMA)
        assert feed.report() == fleet.fleet_report(rebuilt.events)
    finally:
        await pool.close()
