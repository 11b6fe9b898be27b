"""Invariant 9 with the live packager: a new takeover packet whenever its content
would change (hold reason, verdict, handoff...), none when nothing it shows
changed; invariant 8: a record on the wrong partition is left out by the live
packager and by `conn replay` alike, and the two stay equal."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_services import free_port
from kafka_support import LedgerWriter, current
from packager.packager_scenario import ALICE, EXECUTOR, mixed_state
from packager.test_packager_live import SCHEMA, _append, _caught_up, _env, _kafka, _start, _wait_for

from conn_readmodel import replay as replay_mod
from conn_readmodel.store import create_pool
from conn_runtime.partitioning import partition_for
from conn_runtime.settings import Topics
from conn_schemas.events import (
    HoldDeclared,
    HoldDeclaredPayload,
    IncidentClosed,
    IncidentClosedPayload,
    IncidentRecordUpdated,
    IncidentRecordUpdatedPayload,
    TakeoverRequested,
    TakeoverRequestedPayload,
    new_event,
)
from conn_schemas.values import HoldReason

pytestmark = pytest.mark.integration


async def test_a_new_packet_whenever_its_content_changes_and_replay_agrees(
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str, start_process: Any
) -> None:
    kafka = _kafka(kafka_bootstrap, conn_topics)
    port = free_port()
    proc = _start(start_process, _env(kafka_bootstrap, conn_topics, fresh_database, port), port)
    script = mixed_state("inc-current")  # ends with a mixed verdict: hold -> packet 1
    # The hold reason changes (a manual hold on top): packet 2. A note changes nothing
    # a packet shows: no packet. The handoff: packet 3.
    script.add(HoldDeclared, HoldDeclaredPayload(reason=HoldReason.MANUAL, detail="bridge: stop"))
    script.add(
        IncidentRecordUpdated,
        IncidentRecordUpdatedPayload(
            destination="webhook", summary="note", delivered=True, idempotency_key="k1"
        ),
        actor=EXECUTOR,
    )
    script.add(TakeoverRequested, TakeoverRequestedPayload(to_team="database-platform"))
    events = list(script.events)
    pool = await create_pool(fresh_database)
    try:
        await _append(kafka, events)
        # A close of this incident on a partition its key does not hash to (another
        # client's partitioner): no place in its order, for anyone.
        partitions = len(await replay_mod.end_offsets(kafka))
        wrong = (partition_for("inc-current", partitions) + 1) % partitions
        # Signed by its rightful producer: trusted, only its place is wrong.
        closing = new_event(
            IncidentClosed,
            incident_id="inc-current",
            payload=IncidentClosedPayload(resolution="elsewhere"),
            actor=ALICE,
            producer="directive-api",
        )
        async with LedgerWriter(current(), kafka_bootstrap, conn_topics) as writer:
            md = await writer.append_to_partition(closing, wrong)
        assert md.partition == wrong
        packets = 3
        await _wait_for(
            lambda: _caught_up(pool, kafka, len(events) + 1 + packets), proc=proc, timeout=90
        )
        rows = await pool.fetch(
            f"SELECT trigger, to_team, ledger_sequence, packet FROM {SCHEMA}.takeover_packets "
            "WHERE incident_id='inc-current' ORDER BY ledger_sequence"
        )
        assert [(r["trigger"], r["to_team"]) for r in rows] == [
            ("hold", None),
            ("hold", None),
            ("handoff", "database-platform"),
        ]
        assert [r["packet"]["hold"]["reason"] for r in rows] == [
            "verification",
            "manual",
            "manual",
        ]
        incident = await pool.fetchrow(
            f"SELECT closed, bridge FROM {SCHEMA}.incidents WHERE incident_id='inc-current'"
        )
        assert incident is not None and incident["closed"] is False, "the misplaced close"
        result = await replay_mod.run_replay(kafka, fresh_database, live_schema=SCHEMA)
        assert result.ok, result.problems
        assert result.misplaced == 1
    finally:
        await pool.close()
