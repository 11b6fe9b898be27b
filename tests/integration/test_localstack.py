"""The local stack keeps the event log across down/up, leaves no process, and makes the topics
exactly as specified."""

from __future__ import annotations

import asyncio
import uuid

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from conn_runtime.settings import Topics
from conn_runtime.topics import TopicMismatchError, TopicSpec, ensure_topics, topic_specs

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

N = 200


def _admin() -> dict[str, object]:
    """Raw infrastructure checks log in as the stack's admin (a super user)."""
    from conn_localstack.trust import dev_trust

    return dev_trust().client_options("admin")


async def _produce(bootstrap: str, topic: str, n: int) -> list[tuple[str, str]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **_admin()
    )
    await producer.start()
    sent = []
    try:
        for i in range(n):
            key, value = f"inc-{i % 7}", f"{uuid.uuid4()}:{i}"
            await producer.send(topic, value.encode(), key=key.encode())
            sent.append((key, value))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _read_all(bootstrap: str, topic: str) -> tuple[dict[int, int], list[tuple[str, str]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **_admin())
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[tuple[int, int, str, str]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, msgs in batch.items():
                records += [
                    (tp.partition, m.offset, m.key.decode(), m.value.decode()) for m in msgs
                ]
    finally:
        await consumer.stop()
    records.sort()
    return {tp.partition: off for tp, off in ends.items()}, [(k, v) for _, _, k, v in records]


async def _topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_admin())
    await admin.start()
    try:
        resp = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for r in resp:
        for res in r.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            out[res[3]] = {e[0]: e[1] for e in res[4]}
    return out


async def test_down_up_keeps_event_log_and_leaves_no_process(
    kafka_bootstrap, service_sources, conn_topics
):
    if service_sources.get("kafka") != "private":
        pytest.skip(f"kafka came from {service_sources.get('kafka')}, not the private stack")
    from conn_localstack import paths, stack_down, stack_status, stack_up

    # A test copy of conn.events (same configs); the real one is left free of test records.
    topic = conn_topics.events
    await _produce(kafka_bootstrap, topic, N)
    ends_before, records_before = await _read_all(kafka_bootstrap, topic)
    assert sum(ends_before.values()) >= N

    rows = await stack_status()
    running = [str(r["component"]) for r in rows if r["pid"]]
    pids = [int(r["pid"]) for r in rows if r["pid"]]  # type: ignore[call-overload]
    assert "kafka" in running

    stack_down()
    try:
        for pid in pids:
            assert not psutil.pid_exists(pid), f"pid {pid} survived stack_down"
        after = await stack_status()
        assert all(r["pid"] is None for r in after)
        # No broker of this stack left (other stacks on the machine are none of our business).
        ours = str(paths().kafka_config)
        leftovers = [
            p.info
            for p in psutil.process_iter(["pid", "cmdline"])
            if any("kafka.Kafka" in a for a in (p.info["cmdline"] or []))
            and any(ours in a for a in (p.info["cmdline"] or []))
        ]
        assert leftovers == []
    finally:
        await stack_up([*running, "topics"])

    ends_after, records_after = await _read_all(kafka_bootstrap, topic)
    assert ends_after == ends_before
    assert records_after == records_before


async def test_conn_topics_have_the_specified_configs(kafka_bootstrap, conn_topics):
    specs = topic_specs(conn_topics, events_partitions=3)
    configs = await _topic_configs(kafka_bootstrap, [s.name for s in specs])
    ev = configs[conn_topics.events]
    assert (ev["retention.ms"], ev["retention.bytes"], ev["cleanup.policy"]) == (
        "-1",
        "-1",
        "delete",
    )
    assert configs[conn_topics.takeover]["cleanup.policy"] == "compact"
    assert configs[conn_topics.control]["retention.ms"] == "-1"
    assert configs[conn_topics.control]["cleanup.policy"] == "delete"
    assert configs[conn_topics.deadletter]["retention.ms"] == "-1"
    # The broker stamps the append time on the signed topics (retired keys, see signing).
    assert ev["message.timestamp.type"] == "LogAppendTime"
    assert configs[conn_topics.control]["message.timestamp.type"] == "LogAppendTime"

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **_admin())
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([s.name for s in specs])}
    finally:
        await admin.close()
    assert {n: len(t["partitions"]) for n, t in described.items()} == {
        conn_topics.events: 3,
        conn_topics.takeover: 6,
        conn_topics.control: 1,
        conn_topics.deadletter: 6,
    }
    # Idempotent, and a partition mismatch is a clear error.
    assert await ensure_topics(kafka_bootstrap, specs, **_admin()) == []
    with pytest.raises(TopicMismatchError, match="partitions"):
        await ensure_topics(kafka_bootstrap, [TopicSpec(conn_topics.events, 5, {})], **_admin())


async def test_production_topics_on_local_stack(kafka_bootstrap, service_sources):
    if service_sources.get("kafka") != "private":
        pytest.skip("production topics are only created by the local stack")
    t = Topics()
    configs = await _topic_configs(kafka_bootstrap, [t.events, t.takeover, t.control])
    assert configs[t.events]["retention.ms"] == "-1"
    assert configs[t.events]["retention.bytes"] == "-1"
    assert configs[t.takeover]["cleanup.policy"] == "compact"


async def test_fresh_database_is_isolated(fresh_database, database_url):
    import asyncpg

    assert fresh_database != database_url
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("CREATE TABLE t (id int primary key)")
        await conn.execute("INSERT INTO t VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()
    await asyncio.sleep(0)
