"""The fault tier's restart logic (`own_stack`, used by every fault test that restarts
Kafka or PostgreSQL): it restarts the session's own private stack, which comes back
with its data; it refuses, with a clear reason, services that come from elsewhere.
(tests/integration/test_stack_isolation.py runs this file beside a running "demo" stack.)"""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_support import Identities
from stack_support import OwnStack

from conn_localstack import stack_status
from conn_runtime.settings import Topics

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def _pids() -> dict[str, object]:
    return {str(r["component"]): r["pid"] for r in await stack_status()}


async def test_own_stack_restarts_kafka_and_postgres_and_keeps_their_data(
    own_stack: OwnStack,
    kafka_bootstrap: str,
    fresh_database: str,
    conn_topics: Topics,
    trust: Identities,
) -> None:
    own_stack.require("kafka", "postgres")
    marker = uuid.uuid4().hex
    # Through the broker's front door: an executor may write the dead-letter topic,
    # the read-only SRE principal reads it back.
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", **trust.kafka_options("executor")
    )
    await producer.start()
    try:
        md = await producer.send_and_wait(conn_topics.deadletter, marker.encode(), key=b"m")
    finally:
        await producer.stop()
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("CREATE TABLE marker (v text)")
        await conn.execute("INSERT INTO marker VALUES ($1)", marker)
    finally:
        await conn.close()
    before = await _pids()

    for name in ("kafka", "postgres"):
        downtime = await own_stack.restart(name)
        assert downtime > 0

    after = await _pids()
    assert after["kafka"] not in (None, before["kafka"])
    assert after["postgres"] not in (None, before["postgres"])
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT v FROM marker") == marker
    finally:
        await conn.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, **trust.kafka_options("sre")
    )
    await consumer.start()
    try:
        tp = TopicPartition(md.topic, md.partition)
        consumer.assign([tp])
        consumer.seek(tp, md.offset)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        assert [r.value for r in batch[tp]][:1] == [marker.encode()]
    finally:
        await consumer.stop()


async def test_own_stack_refuses_services_it_did_not_start() -> None:
    stack = OwnStack({"kafka": "env", "postgres": "docker"})
    assert not stack.available("kafka") and not stack.available("postgres")
    assert "KAFKA_BOOTSTRAP_SERVERS" in stack.why
    with pytest.raises(pytest.skip.Exception, match="not a stack this session started"):
        stack.require("kafka")
    with pytest.raises(RuntimeError, match="refusing"):
        await stack.restart("kafka")
