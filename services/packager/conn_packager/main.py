"""`python -m conn_packager` / `conn-packager`: run the live packager (faust worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from conn_packager.app import build_app, changelog_topic
from conn_packager.service import Packager
from conn_packager.settings import Settings
from conn_runtime import db, logs
from conn_runtime.kafka import client_options
from conn_runtime.ops import OpsServer, kafka_ready
from conn_runtime.resilience import KAFKA, POSTGRES, Dependencies, StopRequested, Watchdog, retry
from conn_runtime.settings import OpsSettings
from conn_runtime.topics import TopicSpec, ensure_topics
from conn_runtime.trust import TrustConfigError, signer_for
from conn_schemas.signing import SignerRole

log = logging.getLogger("conn_packager")


class TopicMissing(RuntimeError):
    dependency = KAFKA
    """The events topic is not there (yet): waited for like Kafka itself."""


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """Partitions of `topic` (fresh cluster metadata; works outside a subscription)."""
    metadata = await consumer._client.fetch_all_metadata()
    return set(metadata.partitions_for_topic(topic) or ())


async def discover(settings: Settings) -> tuple[int, dict[int, int]]:
    """Partition count of conn.events and its end offsets now (for crash recovery)."""
    topic = settings.kafka.topics.events
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, topic)
        if not parts:
            raise TopicMissing(f"topic {topic!r} does not exist (run `make up` / the topics job)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    # Create the table's changelog up front (same partition count as the source), and
    # wait for its leaders: otherwise faust may see it with 0 partitions right after
    # creating it and crash the agent with PartitionsMismatch.
    changelog = TopicSpec(
        changelog_topic(settings),
        len(tps),
        {"cleanup.policy": "compact"},
        settings.packager.conn_packager_replication,
    )
    opts = client_options(settings.kafka)
    bootstrap = opts.pop("bootstrap_servers")
    await ensure_topics(bootstrap, [changelog], **opts)
    return len(tps), {tp.partition: off for tp, off in ends.items()}


def run() -> None:
    logs.configure("packager")
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"conn-packager: bad setting {first['loc']}: {first['msg']}", file=sys.stderr)
        sys.exit(2)
    try:
        # The packager appends TakeoverPacketPublished: it needs a packager key, now.
        signer_for(settings.kafka, expect_role=SignerRole.PACKAGER)
    except TrustConfigError as exc:
        log.error("invalid configuration", extra={"error": str(exc)})
        print(f"conn-packager: invalid configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    packager = Packager(settings.kafka, settings.database.database_url, settings.schema)
    deps = Dependencies()
    deps.add(KAFKA, lambda: kafka_ready(settings.kafka.kafka_bootstrap_servers))
    deps.add(POSTGRES, db.postgres_probe(settings.database.database_url, lambda: packager.pool))
    watchdog = Watchdog(OpsSettings().conn_wedged_after_seconds)
    ops: OpsServer | None = None
    if settings.packager.conn_packager_metrics_port:
        ops = OpsServer(
            settings.packager.conn_packager_host,
            settings.packager.conn_packager_metrics_port,
            deps=deps,
            watchdog=watchdog,
        )
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopping.set)

    async def prepare() -> tuple[int, dict[int, int]]:
        # The ops server answers first (/readyz names what is missing), then Kafka is
        # waited for with backoff: a packager started before Kafka or the topics does
        # not exit.
        if ops is not None:
            await ops.start()
        deps.start()
        with watchdog.working("discover topics"):
            return await retry(
                lambda: discover(settings), what="packager: discover", deps=deps, stopping=stopping
            )

    try:
        partitions, ends = loop.run_until_complete(prepare())
    except StopRequested:
        log.info("stopped before Kafka was reachable")
        return
    except OSError as exc:  # e.g. the ops port is taken
        log.error("cannot start", extra={"error": repr(exc)})
        sys.exit(1)
    for sig in (signal.SIGTERM, signal.SIGINT):  # faust's worker installs its own
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(sig)
    app = build_app(
        settings, packager, partitions=partitions, ends=ends, deps=deps, watchdog=watchdog, ops=ops
    )
    import faust

    worker = faust.Worker(
        app,
        loop=loop,
        loglevel="INFO",
        redirect_stdouts=False,
        quiet=True,
        logfile=os.devnull,  # faust's plain-text lines; the JSON handler writes stderr
        override_logging=True,
    )
    log.info(
        "starting packager",
        extra={"app_id": app.conf.id, "partitions": partitions, "schema": settings.schema},
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    run()
