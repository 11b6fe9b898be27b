"""The live packager: a faust-streaming app consuming `conn.events`.

- agent `project_events` hands each record to `Packager.handle` (PostgreSQL read
  model + takeover packets; PostgreSQL's `projection_offsets` decides what was
  already applied, so faust's at-least-once redelivery is harmless);
- table `ledger` (changelog-backed, one partition per `conn.events` partition):
  incident_id -> {sequence, hash, bridge}: the ledger head and bridge state;
- timer: publishes packets left unpublished by a crash, once caught up.

App id and topic names honour CONN_TOPIC_PREFIX: app id `<prefix>conn-packager`,
changelog `<prefix>conn-packager-ledger-changelog`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import faust
from aiokafka import TopicPartition

from conn_packager import metrics
from conn_packager.service import Packager
from conn_packager.settings import Settings
from conn_runtime.ops import OpsServer, kafka_ready

log = logging.getLogger(__name__)
T = TypeVar("T")


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{b.strip()}" for b in bootstrap.split(",") if b.strip()]


def app_id(settings: Settings) -> str:
    return f"{settings.kafka.conn_topic_prefix}conn-packager"


def changelog_topic(settings: Settings) -> str:
    return f"{app_id(settings)}-ledger-changelog"


TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
RETRY_SECONDS = 300.0


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Retry a record through PostgreSQL/Kafka outages instead of letting the agent
    crash: on a crash faust acks (skips) the record in hand and the worker exits."""
    deadline = time.monotonic() + RETRY_SECONDS
    delay = 0.2
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            if time.monotonic() > deadline:
                raise
            log.warning(
                "transient failure projecting a record; retrying", extra={"error": repr(exc)}
            )
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)


def build_app(
    settings: Settings, packager: Packager, *, partitions: int, ends: dict[int, int]
) -> faust.App:
    topics = settings.kafka.topics
    # faust creates only the last level of its datadir: a fresh (or cleaned) <tmp>
    # would make every start fail with FileNotFoundError.
    settings.packager.conn_packager_datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(settings),
        broker=broker_urls(settings.kafka.kafka_bootstrap_servers),
        store="memory://",
        datadir=str(settings.packager.conn_packager_datadir / app_id(settings)),
        topic_partitions=partitions,
        topic_replication_factor=settings.packager.conn_packager_replication,
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=100,
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        loghandlers=logging.getLogger().handlers[:1],  # JSON lines (conn_runtime.logs)
    )
    source = app.topic(
        topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )
    ledger = app.Table("ledger", default=dict, partitions=partitions, key_type=str)
    packager.set_startup_end(ends)
    packager.partitions = partitions
    ops: OpsServer | None = None
    if settings.packager.conn_packager_metrics_port:
        ops = OpsServer(
            settings.packager.conn_packager_host, settings.packager.conn_packager_metrics_port
        )
        ops.add_check("kafka", lambda: kafka_ready(settings.kafka.kafka_bootstrap_servers))
        ops.add_check("database", packager.ready)

    @app.agent(source)
    async def project_events(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            handled = await _retrying(
                functools.partial(packager.handle, msg.topic, msg.partition, msg.offset, msg.value)
            )
            if handled is not None:
                ledger[handled.incident_id] = {
                    "sequence": handled.sequence,
                    "hash": handled.head,
                    "bridge": handled.bridge,
                }
            high = app.consumer.highwater(TopicPartition(msg.topic, msg.partition))
            if high is not None:
                metrics.PROJECTION_LAG.labels(partition=str(msg.partition)).set(
                    max(0, high - msg.offset - 1)
                )

    @app.task
    async def start_services() -> None:
        await packager.start()
        if ops is not None:
            await ops.start()

    @app.timer(interval=1.0)
    async def recover_packets() -> None:
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.events}
        if assigned:
            await packager.publish_pending(assigned)
            ends = {p: app.consumer.highwater(TopicPartition(topics.events, p)) for p in assigned}
            await packager.catch_up(topics.events, ends)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.events:
                packager._forget_partition(tp.partition)

    app.conn_ops = ops  # type: ignore[attr-defined]
    return app
