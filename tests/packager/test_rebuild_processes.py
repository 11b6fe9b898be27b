"""`conn replay`'s rebuild shared out between worker processes (real Kafka and
PostgreSQL) writes the read model of one process projecting the log record by record,
and counts the same outcomes: every record verified (forged and unreadable ones refused
and reported), in partition order; and a worker that cannot run fails the rebuild."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from readmodel_histories import (
    KEYS,
    PARTITIONS,
    bench_incidents,
    incident_items,
    records,
    replay_outcome,
)

from conn_readmodel.projector import Projector
from conn_readmodel.replay import (
    ReplayResult,
    compare,
    project_batch,
    read_topic,
    rebuild,
    rebuild_workers,
)
from conn_readmodel.store import apply_ddl, create_pool
from conn_runtime.settings import KafkaSettings, Topics
from conn_runtime.trust import Trust

pytestmark = pytest.mark.integration


def log(topics: Topics) -> list[Any]:
    """Incidents on every partition: the bench's, one closed then written to again, one
    with a forged and an unreadable record."""
    closing = incident_items(
        "inc-closes", ["step", "hold", "publish", "close", "note", "forged", "step"]
    )
    other = incident_items("inc-other", ["mixed", "handoff", "publish", "unreadable", "refuse"])
    recs = records([closing, other], list(range(len(closing) + len(other))))
    recs += bench_incidents(4)
    by_partition: dict[int, int] = {}
    out = []
    for rec in recs:
        offset = by_partition.get(rec.partition, 0)
        by_partition[rec.partition] = offset + 1
        out.append(dataclasses.replace(rec, topic=topics.events, offset=offset))
    assert len(by_partition) == PARTITIONS
    return out


async def produce(bootstrap: str, trust: Any, recs: list[Any]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", **trust.kafka_options("admin")
    )
    await producer.start()
    try:
        for rec in recs:
            await producer.send_and_wait(
                rec.topic, rec.value, key=rec.key, partition=rec.partition, headers=rec.headers
            )
    finally:
        await producer.stop()


async def test_rebuild_in_processes_equals_one_record_at_a_time(
    kafka_bootstrap: str,
    conn_topics: Topics,
    fresh_database: str,
    trust: Any,
    tmp_path: Path,
) -> None:
    keyring = tmp_path / "keyring.json"
    keyring.write_bytes(orjson.dumps(KEYS.doc))
    kafka = trust.settings(kafka_bootstrap, conn_topics, "sre").model_copy(
        update={"conn_keyring_file": keyring}
    )
    assert isinstance(kafka, KafkaSettings)
    recs = log(conn_topics)
    await produce(kafka_bootstrap, trust, recs)

    pool = await create_pool(fresh_database)
    try:
        # The reference: the records as read back, projected one per transaction.
        reference = f"t_ref_{uuid.uuid4().hex[:8]}"
        await apply_ddl(pool, reference)
        projector = Projector(Trust(KEYS.keyring, conn_topics), partitions=PARTITIONS)
        expected = ReplayResult()
        built: dict[tuple[str, int], str] = {}
        _, _, read = await read_topic(kafka)
        async with pool.acquire() as conn:
            async for rec in read:
                await project_batch(
                    conn, reference, conn_topics.events, projector, [rec], expected, built
                )
        assert expected.records == len(recs)
        assert expected.unreadable == 1 and len(expected.untrusted) == 1

        for workers, batch, held in ((2, 7, 0), (1, 5, 1)):
            schema = f"t_proc_{uuid.uuid4().hex[:8]}"
            result = await rebuild(
                kafka,
                pool,
                schema,
                database_url=fresh_database,
                workers=workers,
                batch=batch,
                held_folds=held,
            )
            assert await compare(pool, reference, schema) == [], workers
            assert replay_outcome(result) == replay_outcome(expected), workers
    finally:
        await pool.close()


async def test_a_worker_that_cannot_run_fails_the_rebuild(
    kafka_bootstrap: str, conn_topics: Topics, fresh_database: str, trust: Any, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    keyring.write_bytes(orjson.dumps(KEYS.doc))
    kafka = trust.settings(kafka_bootstrap, conn_topics, "sre").model_copy(
        update={"conn_keyring_file": keyring}
    )
    await produce(kafka_bootstrap, trust, log(conn_topics))
    pool = await create_pool(fresh_database)
    try:
        with pytest.raises(OSError):  # the workers' database refuses connections
            await rebuild(
                kafka, pool, "t_unreachable", database_url="postgresql://x@127.0.0.1:9/x", workers=2
            )
    finally:
        await pool.close()


def test_workers_default_to_one_per_core_only_for_a_large_topic() -> None:
    assert rebuild_workers(None, 100, 6) == 1
    assert rebuild_workers(3, 100, 2) == 2
    assert rebuild_workers(None, 10**6, 1) == 1
    assert rebuild_workers(0, 10**6, 6) == 1
