"""The live packager: a faust-streaming app consuming `conn.events`.

- agent `project_events` hands each record to a batcher (`conn_packager.batching`,
  group commit: no wait when idle, everything handed over meanwhile when busy) and
  `Packager.handle_many` projects each batch (PostgreSQL read model + takeover packets,
  through `conn_readmodel.projector`, one transaction per partition per batch); a
  record is acked to faust only once its batch committed, and PostgreSQL's
  `projection_offsets` decides what was already applied, so faust's at-least-once
  redelivery is harmless. The read model is the only state: faust keeps no table;
- timer: publishes packets left unpublished by a crash (or by Kafka being away
  when they were due), once caught up.

Dependencies: a record is retried (bounded backoff, no attempt limit) while
PostgreSQL or Kafka is away, so the agent never crashes on an outage (a crashed
agent makes faust skip the record in hand and stop the worker); the timer skips
its ticks with the same backoff. `/readyz` names what is missing meanwhile.

App id and topic names honour CONN_TOPIC_PREFIX: app id `<prefix>conn-packager`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from aiokafka import TopicPartition

from conn_packager import fleet as fleet_gauges
from conn_packager import metrics
from conn_packager.batching import Batcher, project_batches
from conn_packager.service import Packager
from conn_packager.settings import Settings
from conn_runtime.ops import OpsServer
from conn_runtime.resilience import DEFAULT_BACKOFF, Dependencies, Watchdog, dependency_of, retry
from conn_runtime.settings import KafkaSettings
from conn_runtime.trust import RawRecord

log = logging.getLogger(__name__)


BATCH_LIMIT = 1000
"""Most records projected as one batch (the stream waits while this many are waiting)."""


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{b.strip()}" for b in bootstrap.split(",") if b.strip()]


def broker_credentials(kafka: KafkaSettings) -> Any:
    """faust's `broker_credentials` for the same identity every other client uses
    (`conn_runtime.kafka.client_options`): SASL (SCRAM) and/or TLS, or None."""
    protocol = kafka.kafka_security_protocol.upper()
    context = (
        ssl.create_default_context(cafile=kafka.kafka_ssl_cafile)
        if protocol in ("SSL", "SASL_SSL")
        else None
    )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=kafka.kafka_sasl_username,
            password=kafka.kafka_sasl_password,
            mechanism=kafka.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def app_id(settings: Settings) -> str:
    return f"{settings.kafka.conn_topic_prefix}conn-packager"


def build_app(
    settings: Settings,
    packager: Packager,
    *,
    partitions: int,
    ends: dict[int, int],
    deps: Dependencies | None = None,
    watchdog: Watchdog | None = None,
    ops: OpsServer | None = None,
) -> faust.App:
    """`ops` (already serving, with `deps` and `watchdog`) is created by `main` before
    Kafka is reached, so /healthz and /readyz answer while the packager waits."""
    deps = deps or Dependencies()
    watchdog = watchdog or Watchdog()
    topics = settings.kafka.topics
    # faust creates only the last level of its datadir: a fresh (or cleaned) <tmp>
    # would make every start fail with FileNotFoundError.
    settings.packager.conn_packager_datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(settings),
        broker=broker_urls(settings.kafka.kafka_bootstrap_servers),
        broker_credentials=broker_credentials(settings.kafka),
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
    packager.set_startup_end(ends)
    packager.partitions = partitions

    async def packager_started() -> bool:
        return packager.started

    if ops is not None:
        ops.add_check("packager", packager_started)

    batcher: Batcher[tuple[RawRecord, Callable[[], Awaitable[Any]]]] = Batcher(BATCH_LIMIT)

    async def project(records: list[RawRecord]) -> None:
        first, last = records[0], records[-1]
        with watchdog.working("project records"):
            await retry(
                functools.partial(packager.handle_many, records),
                what=f"project {len(records)} record(s) from {first.topic}/"
                f"{first.partition}@{first.offset} to {last.partition}@{last.offset}",
                deps=deps,
            )

    def report_lag(records: Sequence[RawRecord]) -> None:
        newest: dict[tuple[str, int], int] = {}
        for record in records:
            newest[(record.topic, record.partition)] = record.offset
        for (topic, partition), offset in newest.items():
            high = app.consumer.highwater(TopicPartition(topic, partition))
            if high is not None:
                metrics.PROJECTION_LAG.labels(partition=str(partition)).set(
                    max(0, high - offset - 1)
                )

    @app.agent(source)
    async def project_events(stream: Any) -> None:
        """Hands each record to the batch projection (`batching.project_batches`, run
        alongside: a failure there fails this agent as a failure of `handle` did)."""
        manual = stream.noack()
        worker = asyncio.create_task(
            project_batches(batcher, project, report_lag), name="packager-batches"
        )
        try:
            async for event in manual.events():
                if worker.done():
                    worker.result()  # raises what stopped it
                msg = event.message
                record = RawRecord(
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    key=msg.key,
                    value=msg.value,
                    headers=list((msg.headers or {}).items())
                    if isinstance(msg.headers, dict)
                    else list(msg.headers or ()),
                    timestamp=int(msg.timestamp * 1000) if msg.timestamp is not None else -1,
                    timestamp_type=msg.timestamp_type or 0,
                )
                item = (record, functools.partial(manual.ack, event))
                if len(batcher) < batcher.limit:
                    await batcher.put(item)  # room: returns at once
                    continue
                # Back-pressure: wait for room, or for the projection to fail.
                put = asyncio.ensure_future(batcher.put(item))
                await asyncio.wait([put, worker], return_when=asyncio.FIRST_COMPLETED)
                if not put.done():
                    put.cancel()
                    worker.result()
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def start_services() -> None:
        with watchdog.working("start"):
            await retry(packager.start, what="packager: start", deps=deps)

    app.task(start_services)  # faust's decorators are untyped: registered by call

    backoff = {"failures": 0, "next": 0.0}

    async def recover_packets() -> None:
        if time.monotonic() < backoff["next"]:
            return  # backing off while a dependency is away
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.events}
        if not assigned:
            return
        try:
            with watchdog.working("recover packets"):
                await packager.publish_pending(assigned)
                ends = {
                    p: app.consumer.highwater(TopicPartition(topics.events, p)) for p in assigned
                }
                await packager.catch_up(topics.events, ends)
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
            # A timer that raises crashes the faust app: wait and try again instead.
            deps.report(exc)
            delay = DEFAULT_BACKOFF.delay(int(backoff["failures"]))
            backoff["failures"] += 1
            backoff["next"] = time.monotonic() + delay
            log.warning(
                "packet recovery waits for a dependency",
                extra={"error": repr(exc)[:300], "retry_in": round(delay, 2)},
            )
            return
        backoff["failures"] = 0

    app.timer(interval=1.0)(recover_packets)

    feed = fleet_gauges.LedgerFeed(settings.schema)

    async def refresh_fleet() -> None:
        """The conn_fleet_* gauges, from the read model's ledger (conn_packager.fleet):
        only the entries written since the last refresh are read."""
        pool = packager.pool
        if pool is None or not packager.started:
            return
        try:
            if await feed.refresh(pool):  # recompute only when the ledger grew
                fleet_gauges.publish(feed.report(), now=time.time())
            else:
                fleet_gauges.REFRESHED.set(time.time())
        except Exception as exc:
            if dependency_of(exc) is None:
                log.exception("fleet report failed; the gauges keep their last values")
            else:
                deps.report(exc)
            return  # a timer that raises crashes the faust app

    app.timer(interval=settings.packager.conn_packager_fleet_interval)(refresh_fleet)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        del sender, signal  # the signal's calling convention; only the partitions matter
        revoked: set[Any] = args[0] if args else set()  # faust sends the revoked TPs
        for tp in revoked:
            if tp.topic == topics.events:
                packager._forget_partition(tp.partition)

    app.conn_ops = ops  # type: ignore[attr-defined]
    return app
