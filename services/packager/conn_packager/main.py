"""`python -m conn_packager` / `conn-packager`: run the live packager (faust worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from pydantic import ValidationError

from conn_packager.app import build_app
from conn_packager.service import Packager
from conn_packager.settings import Settings
from conn_runtime import db, logs
from conn_runtime.ops import OpsServer, kafka_ready
from conn_runtime.partitions import PartitionReader, TopicNotFound
from conn_runtime.resilience import KAFKA, POSTGRES, Dependencies, StopRequested, Watchdog, retry
from conn_runtime.settings import OpsSettings
from conn_runtime.trust import TrustConfigError, signer_for
from conn_schemas.signing import SignerRole

log = logging.getLogger("conn_packager")


class TopicMissing(RuntimeError):
    """The events topic is not there (yet): waited for like Kafka itself."""

    dependency = KAFKA


async def discover(settings: Settings) -> tuple[int, dict[int, int]]:
    """Partition count of conn.events and its end offsets now (for crash recovery)."""
    topic = settings.kafka.topics.events
    async with PartitionReader(settings.kafka, name="packager-discover") as reader:
        try:
            ends = await reader.end_offsets(topic)
        except TopicNotFound:
            raise TopicMissing(
                f"topic {topic!r} does not exist (run `make up` / the topics job)"
            ) from None
    return len(ends), ends


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
