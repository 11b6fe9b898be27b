"""One phase of the replay benchmark, in its own process so its peak memory (maxrss) is
its own: `python -m bench.replay_worker PHASE --bootstrap B --topic T [--dsn D --schema S]`.
Prints one JSON line: {"phase", "events", "seconds", "maxrss_mb", ...}.

Phases:
  raw      raw aiokafka consumption of the topic (count only, no decode) - the baseline
  ledger   the benchmark's bulk loader: ledger rows (raw JSON + hash chain, no fold)
           inserted with executemany into SCHEMA.ledger_entries (what `chain` verifies)
  project  conn replay's reader + codec + the packager's projection, no database, one
           process (--limit N: the first N records)
  chain    conn_readmodel.replay.verify_chain over SCHEMA (what `conn replay` runs first)
  drop     delete the topics under the topic's prefix (the generated topic, at exit)
  rebuild  conn_readmodel.replay.rebuild: the full read-model rebuild into SCHEMA, its
           partitions shared out between worker processes (--workers N, default one per
           core); peak RSS of the largest worker too
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from conn_core.chain import GENESIS, link_raw
from conn_readmodel.projection import BatchRows
from conn_readmodel.projector import Projector, Refused
from conn_readmodel.replay import BATCH, read_topic, rebuild, verify_chain
from conn_readmodel.store import apply_ddl, check_schema, create_pool
from conn_runtime.kafka import client_options
from conn_runtime.partitions import topic_partitions
from conn_runtime.settings import KafkaSettings, Topics
from conn_runtime.trust import trust_for

LEDGER_COLUMNS = (
    "incident_id",
    "sequence",
    "event_id",
    "event_type",
    "occurred_at",
    "actor",
    "correlation_id",
    "causation_id",
    "prev_hash",
    "hash",
    "raw",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_maxrss_mb() -> float:
    """Peak RSS of the largest finished child process (the rebuild's workers), 0 if none."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def kafka_settings(bootstrap: str, topic: str) -> KafkaSettings:
    """As `conn replay` runs on the local stack: the read-only SRE login, the dev keyring."""
    from conn_localstack.trust import SASL_MECHANISM, dev_trust

    trust = dev_trust()
    prefix = topic.removesuffix("conn.events")
    return KafkaSettings(
        kafka_bootstrap_servers=bootstrap,
        conn_topic_prefix=prefix,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=SASL_MECHANISM,
        kafka_sasl_username="sre",
        kafka_sasl_password=trust.password("sre"),
        conn_keyring_file=trust.keyring_file,
    )


async def raw(bootstrap: str, topic: str) -> dict[str, Any]:
    login = client_options(kafka_settings(bootstrap, topic))
    del login["bootstrap_servers"]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        **login,
    )
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begins[tp])
        total = sum(ends[tp] - begins[tp] for tp in tps)
        count = 0
        started = time.perf_counter()
        while count < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in batch.values():
                count += len(records)
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"events": count, "seconds": seconds}


async def ledger(bootstrap: str, topic: str, dsn: str, schema: str) -> dict[str, Any]:
    """The benchmark's bulk loader for the million-entry ledger that `chain` verifies:
    the same rows the projection writes to ledger_entries (raw = the record's JSON, which
    is what the codec encodes; hash = conn_core.chain.link_raw(prev, raw)), computed
    without the fold and inserted with executemany."""
    kafka = kafka_settings(bootstrap, topic)
    pool = await create_pool(dsn)
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {check_schema(schema)} CASCADE")
        await apply_ddl(pool, schema)
        sql = (
            f"INSERT INTO {schema}.ledger_entries ({', '.join(LEDGER_COLUMNS)}) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(LEDGER_COLUMNS)))})"
        )
        started = time.perf_counter()
        _, _, records = await read_topic(kafka)
        heads: dict[str, tuple[int, str]] = {}
        batch: list[tuple[Any, ...]] = []
        events = 0
        async with pool.acquire() as conn:
            async for rec in records:
                raw = orjson.loads(rec.value or b"{}")
                inc = raw["incident_id"]
                seq, prev = heads.get(inc, (0, GENESIS))
                digest = link_raw(prev, raw)
                heads[inc] = (seq + 1, digest)
                batch.append(
                    (
                        inc,
                        seq + 1,
                        uuid.UUID(raw["event_id"]),
                        raw["event_type"],
                        datetime.fromisoformat(raw["occurred_at"]),
                        raw["actor"]["id"],
                        raw.get("correlation_id"),
                        raw.get("causation_id"),
                        prev,
                        digest,
                        raw,
                        topic,
                        rec.partition,
                        rec.offset,
                    )
                )
                events += 1
                if len(batch) >= 5000:
                    await conn.executemany(sql, batch)
                    batch.clear()
            if batch:
                await conn.executemany(sql, batch)
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return {"events": events, "seconds": seconds}


async def project_only(bootstrap: str, topic: str, limit: int | None) -> dict[str, Any]:
    """conn replay's reader + signature check + codec + the packager's projection (fold,
    hash chain, takeover packets; each incident's row and bridge once per batch of
    `replay.BATCH` records, as `rebuild` does), no database, in ONE process: where a
    rebuild worker's CPU time goes. `limit`: stop after that many records."""
    kafka = kafka_settings(bootstrap, topic)
    projector = Projector(trust_for(kafka, shared=False))
    started = time.perf_counter()
    _, _, records = await read_topic(kafka)
    batch = BatchRows()
    events = refused = pending = 0
    async for rec in records:
        if limit is not None and events + refused >= limit:
            break
        outcome = projector.apply(rec, batch)
        if isinstance(outcome, Refused):
            refused += 1
        else:
            events += 1
        pending += 1
        if pending >= BATCH:
            batch.incidents()
            batch, pending = BatchRows(), 0
    batch.incidents()
    seconds = time.perf_counter() - started
    await records.aclose()  # type: ignore[attr-defined]  # an async generator
    return {"events": events, "seconds": seconds, "unreadable": refused}


async def chain(dsn: str, schema: str) -> dict[str, Any]:
    pool = await create_pool(dsn)
    try:
        rows = await pool.fetchval(f"SELECT count(*) FROM {check_schema(schema)}.ledger_entries")
        started = time.perf_counter()
        problems = await verify_chain(pool, schema)
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return {"events": int(rows), "seconds": seconds, "problems": problems[:3]}


async def rebuild_phase(
    bootstrap: str, topic: str, dsn: str, schema: str, workers: int | None
) -> dict[str, Any]:
    """`conn replay`'s rebuild as it runs it: with the database URL, so the partitions
    are shared out between worker processes (`workers`, default: one per core) when the
    topic is large enough."""
    kafka = kafka_settings(bootstrap, topic)
    pool = await create_pool(dsn)
    try:
        started = time.perf_counter()
        result = await rebuild(kafka, pool, schema, database_url=dsn, workers=workers)
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return {
        "events": result.events,
        "seconds": seconds,
        "unreadable": result.unreadable,
        "untrusted": len(result.untrusted),
        "problems": result.problems[:3],
        "workers_maxrss_mb": children_maxrss_mb(),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.phase == "drop":
        from bench.harness import delete_prefixed_topics

        await delete_prefixed_topics(args.bootstrap, args.topic.removesuffix("conn.events"))
        return {"events": 0, "seconds": 0}
    if args.phase == "raw":
        return await raw(args.bootstrap, args.topic)
    if args.phase == "ledger":
        return await ledger(args.bootstrap, args.topic, args.dsn, args.schema)
    if args.phase == "project":
        return await project_only(args.bootstrap, args.topic, args.limit)
    if args.phase == "chain":
        return await chain(args.dsn, args.schema)
    return await rebuild_phase(args.bootstrap, args.topic, args.dsn, args.schema, args.workers)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_worker")
    parser.add_argument("phase", choices=["raw", "ledger", "project", "chain", "rebuild", "drop"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default=Topics().events)
    parser.add_argument("--dsn", default="")
    parser.add_argument("--schema", default="bench_replay")
    parser.add_argument("--workers", type=int, default=None, help="rebuild: processes")
    parser.add_argument("--limit", type=int, default=None, help="project: records at most")
    args = parser.parse_args()
    doc = asyncio.run(run(args))
    doc.update(phase=args.phase, maxrss_mb=maxrss_mb())
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")


if __name__ == "__main__":
    main()
