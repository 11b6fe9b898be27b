"""The live packager (faust worker, real Kafka + PostgreSQL) against `conn replay`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from fixtures_services import Proc, free_port
from kafka_support import Identities, LedgerWriter, current
from packager.packager_scenario import mixed_state, recovered

from conn_core.chain import GENESIS, link
from conn_readmodel import queries as readmodel
from conn_readmodel import replay as replay_mod
from conn_readmodel.packet import packet_sha256
from conn_readmodel.store import create_pool
from conn_runtime.settings import KafkaSettings, Topics
from conn_schemas.events import Envelope
from conn_schemas.packet import TakeoverPacket

pytestmark = pytest.mark.integration
SCHEMA = "conn_read"


def _env(kafka_bootstrap: str, topics: Topics, dsn: str, port: int) -> dict[str, str]:
    prefix = topics.events.removesuffix("conn.events")
    return {
        **current().env("packager"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CONN_TOPIC_PREFIX": prefix,
        "DATABASE_URL": dsn,
        "CONN_PACKAGER_METRICS_PORT": str(port),
        "CONN_READ_SCHEMA": SCHEMA,
    }


def _kafka(kafka_bootstrap: str, topics: Topics) -> KafkaSettings:
    """As `conn replay` runs it: the read-only SRE principal, verifying with the keyring."""
    return current().settings(kafka_bootstrap, topics, "sre")


async def _append(kafka: KafkaSettings, events: list[Envelope]) -> None:
    """Each event as its rightful producer writes it (scripts are stamped that way)."""
    topics = kafka.topics
    async with LedgerWriter(current(), kafka.kafka_bootstrap_servers, topics) as writer:
        for event in events:
            assert await writer.append(event) == event


async def _wait_for(
    check: Callable[[], Any], timeout: float = 60.0, proc: Proc | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = proc.log_tail() if proc else ""
            raise AssertionError(f"condition not met within {timeout}s\n{tail}")
        await asyncio.sleep(0.3)


def _start(start_process: Any, env: dict[str, str], port: int) -> Proc:
    return start_process(
        "packager", "conn_packager", env=env, port=port, health_path="/healthz", timeout=60
    )


async def _caught_up(pool: asyncpg.Pool, kafka: KafkaSettings, total_min: int) -> bool:
    try:
        rows = await pool.fetch(f"SELECT partition, next_offset FROM {SCHEMA}.projection_offsets")
    except asyncpg.UndefinedTableError:
        return False
    ends = await replay_mod.end_offsets(kafka)
    have = {r["partition"]: r["next_offset"] for r in rows}
    return sum(ends.values()) >= total_min and all(
        have.get(p, 0) >= end for p, end in ends.items() if end > 0
    )


async def test_live_read_model_equals_replay_and_packet_is_complete(
    kafka_bootstrap: str,
    conn_topics: Topics,
    fresh_database: str,
    start_process: Any,
    trust: Identities,
) -> None:
    kafka = _kafka(kafka_bootstrap, conn_topics)
    port = free_port()
    proc = _start(start_process, _env(kafka_bootstrap, conn_topics, fresh_database, port), port)
    mixed = mixed_state("inc-mixed")
    scripts = [mixed, recovered("inc-ok"), recovered("inc-handoff", handoff=True)]
    events = [e for s in scripts for e in s.events]
    await _append(kafka, events)

    pool = await create_pool(fresh_database)
    try:
        # scripted events + 2 TakeoverPacketPublished (hold on inc-mixed, handoff)
        await _wait_for(lambda: _caught_up(pool, kafka, len(events) + 2), proc=proc)

        # --- the packet of the mixed-state scenario: every item of invariant 9 -----------
        row = await pool.fetchrow(
            f"SELECT * FROM {SCHEMA}.takeover_packets WHERE incident_id='inc-mixed'"
        )
        assert row is not None and row["published_sequence"] is not None
        packet = TakeoverPacket.model_validate(row["packet"])
        assert packet_sha256(packet) == row["packet_sha256"]
        head = GENESIS
        for e in mixed.events:
            head = link(head, e)
        assert packet.ledger_head.sequence == len(mixed.events)
        assert packet.ledger_head.hash == head
        assert packet.trigger == "hold" and packet.hold is not None
        assert packet.hold.reason.value == "verification"
        assert packet.last_step is not None
        assert packet.last_step.correlation_id == "c-drain"
        assert packet.last_step.status == "succeeded"
        assert packet.last_step.verdict is not None and packet.last_step.verdict.value == "mixed"
        regions = {r.region: r for r in packet.regions}
        assert set(regions) == {"us-east", "eu-west"}
        assert regions["us-east"].healthy is True and regions["eu-west"].healthy is False
        assert regions["eu-west"].age_seconds == pytest.approx(7.0)
        assert [d.correlation_id for d in packet.pending_directives] == ["c-note"]
        assert [d.correlation_id for d in packet.blocked_directives] == ["c-restart"]
        assert [(d.correlation_id, d.target, d.regions) for d in packet.partial_changes] == [
            ("c-drain", "cache-invalidation", ("us-east",))
        ]
        assert packet.authority is not None
        assert packet.authority.name == "checkout-outage"
        assert packet.authority.holder == "alice"
        assert packet.authority.sha256 == mixed.events[1].payload.content_sha256  # type: ignore[attr-defined]

        # the TakeoverPacketPublished in the log carries the packet's hash and head
        pub = await pool.fetchrow(
            f"SELECT raw FROM {SCHEMA}.ledger_entries WHERE incident_id='inc-mixed' "
            "AND event_type='TakeoverPacketPublished'"
        )
        assert pub is not None
        assert pub["raw"]["payload"]["packet_sha256"] == row["packet_sha256"]
        assert pub["raw"]["payload"]["ledger_hash"] == head
        handoff = await pool.fetchrow(
            f"SELECT trigger, to_team FROM {SCHEMA}.takeover_packets WHERE incident_id='inc-handoff'"
        )
        assert handoff is not None and tuple(handoff) == ("handoff", "database-platform")
        assert (
            await pool.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.takeover_packets WHERE incident_id='inc-ok'"
            )
            == 0
        )

        # --- read-model queries used by the directive API --------------------------------
        inc = await readmodel.get_incident(pool, "inc-mixed")
        assert (
            inc is not None and inc["on_hold"] and inc["bridge"]["hold"]["reason"] == "verification"
        )
        assert [i["incident_id"] for i in await readmodel.list_incidents(pool)]
        ledger = await readmodel.list_ledger(
            pool, "inc-mixed", after_sequence=2, limit=3, event_types=["DirectiveIssued"]
        )
        assert [r["sequence"] for r in ledger] == [4, 8, 10]
        latest = await readmodel.latest_packet(pool, "inc-mixed")
        assert latest is not None and latest["packet_sha256"] == row["packet_sha256"]
        report = await readmodel.timeline(pool, "inc-mixed")
        assert report is not None and report["slis"]["holds"] == 1

        # --- replay rebuilds an equal read model -----------------------------------------
        result = await replay_mod.run_replay(kafka, fresh_database, live_schema=SCHEMA)
        assert result.ok, result.problems
        assert result.events == len(events) + 2
        # Authorship, proven by signature: who signed how many of the folded events.
        by_producer: dict[str, int] = {}
        for e in events:
            by_producer[e.producer] = by_producer.get(e.producer, 0) + 1
        assert dict(result.signed_by) == {**by_producer, "packager": 2}
        assert result.untrusted == []

        # --- a row altered in the live read model is detected and named ------------------
        await pool.execute(
            f"UPDATE {SCHEMA}.verification_snapshots SET verdict='recovered' "
            "WHERE incident_id='inc-mixed'"
        )
        result = await replay_mod.run_replay(kafka, fresh_database, live_schema=SCHEMA)
        assert not result.ok
        assert "verification_snapshots ('inc-mixed', 11)" in (result.first_problem or "")
        assert "verdict" in (result.first_problem or "")
        await pool.execute(
            f"UPDATE {SCHEMA}.verification_snapshots SET verdict='mixed' "
            "WHERE incident_id='inc-mixed'"
        )

        # --- an altered ledger record breaks the chain, and is named ---------------------
        await pool.execute(
            f"""UPDATE {SCHEMA}.ledger_entries SET raw = jsonb_set(raw, '{{actor,id}}', '"mallory"')
            WHERE incident_id='inc-ok' AND sequence=3"""
        )
        result = await replay_mod.run_replay(kafka, fresh_database, live_schema=SCHEMA)
        assert not result.ok
        assert result.first_problem is not None
        assert "ledger_entries (inc-ok, 3)" in result.first_problem
    finally:
        await pool.close()


async def test_record_missing_from_rebuilt_chain_is_named(
    kafka_bootstrap: str,
    conn_topics: Topics,
    fresh_database: str,
    start_process: Any,
    trust: Identities,
) -> None:
    """A ledger entry the topic does not contain (e.g. forged into the read model)."""
    kafka = _kafka(kafka_bootstrap, conn_topics)
    port = free_port()
    proc = _start(start_process, _env(kafka_bootstrap, conn_topics, fresh_database, port), port)
    script = recovered("inc-a")
    await _append(kafka, script.events)
    pool = await create_pool(fresh_database)
    try:
        await _wait_for(lambda: _caught_up(pool, kafka, len(script.events)), proc=proc)
        proc.stop()
        last = await pool.fetchrow(
            f"SELECT * FROM {SCHEMA}.ledger_entries WHERE incident_id='inc-a' "
            "ORDER BY sequence DESC LIMIT 1"
        )
        assert last is not None
        forged = dict(last)
        forged["sequence"] += 1
        forged["prev_hash"] = last["hash"]
        forged["kafka_offset"] += 1000
        import uuid

        forged["event_id"] = uuid.uuid4()
        from conn_core.chain import link_raw

        forged["hash"] = link_raw(last["hash"], forged["raw"])  # a consistent forged chain
        cols = list(forged)
        await pool.execute(
            f"INSERT INTO {SCHEMA}.ledger_entries ({', '.join(cols)}) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(cols)))})",
            *forged.values(),
        )
        result = await replay_mod.run_replay(kafka, fresh_database, live_schema=SCHEMA)
        assert not result.ok
        seq = forged["sequence"]
        assert result.first_problem == (
            f"ledger_entries ('inc-a', {seq}): in the live read model but missing from the rebuild"
        )
    finally:
        await pool.close()


async def test_sigkill_mid_stream_then_restart_equals_fresh_rebuild(
    kafka_bootstrap: str,
    conn_topics: Topics,
    fresh_database: str,
    start_process: Any,
    trust: Identities,
) -> None:
    kafka = _kafka(kafka_bootstrap, conn_topics)
    port = free_port()
    env = _env(kafka_bootstrap, conn_topics, fresh_database, port)
    proc = _start(start_process, env, port)
    scripts = [mixed_state(f"inc-k{i}") for i in range(4)] + [
        recovered(f"inc-r{i}", handoff=i % 2 == 0) for i in range(6)
    ]
    events = [e for s in scripts for e in s.events]
    pool = await create_pool(fresh_database)
    try:
        append = asyncio.create_task(_append(kafka, events))

        async def some_projected() -> bool:
            try:
                n = await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.ledger_entries")
            except asyncpg.UndefinedTableError:
                return False
            return bool(n and n > 5)

        await _wait_for(some_projected, proc=proc)
        proc.kill()  # SIGKILL mid-stream
        await append
        projected = await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.ledger_entries")
        assert projected is not None
        proc2 = _start(start_process, env, port)
        packets = 4 + 3  # 4 holds + 3 handoffs
        await _wait_for(lambda: _caught_up(pool, kafka, len(events) + packets), proc=proc2)

        async def all_published() -> bool:
            n = await pool.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.takeover_packets WHERE published_sequence IS NOT NULL"
            )
            return n == packets and await _caught_up(pool, kafka, len(events) + packets)

        await _wait_for(all_published, proc=proc2)
        # exactly one TakeoverPacketPublished per packet: no duplicates after the crash
        dupes = await pool.fetchval(
            f"""SELECT count(*) FROM {SCHEMA}.ledger_entries
            WHERE event_type='TakeoverPacketPublished'"""
        )
        assert dupes == packets
        result = await replay_mod.run_replay(kafka, fresh_database, live_schema=SCHEMA)
        assert result.ok, result.problems
    finally:
        await pool.close()
