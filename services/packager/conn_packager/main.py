"""`python -m conn_packager` / `conn-packager`: run the live packager (faust worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from conn_packager.app import build_app
from conn_packager.service import Packager
from conn_packager.settings import Settings
from conn_runtime import db
from conn_runtime.ops import OpsServer, kafka_ready
from conn_runtime.partitions import PartitionReader, TopicNotFound
from conn_runtime.resilience import KAFKA, POSTGRES, Dependencies, StopRequested, Watchdog, retry
from conn_runtime.service import serve
from conn_runtime.settings import OpsSettings
from conn_runtime.trust import signer_for
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


def _faust_worker(app: Any) -> Any:
    import faust

    class Worker(faust.Worker):
        def install_signal_handlers(self) -> None:
            """SIGTERM/SIGINT belong to `serve` (they set `stop`, which stops us)."""

    return Worker(
        app,
        loop=asyncio.get_running_loop(),
        loglevel="INFO",
        redirect_stdouts=False,
        quiet=True,
        logfile=os.devnull,  # faust's plain-text lines; the JSON handler writes stderr
        override_logging=True,
    )


class PackagerService:
    """The live packager as a `Service`: its ops server, the topic discovery (waiting for
    Kafka and the topics with backoff), then the faust worker until `stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.packager = Packager(settings.kafka, settings.database.database_url, settings.schema)
        self.deps = Dependencies()
        self.deps.add(KAFKA, lambda: kafka_ready(settings.kafka.kafka_bootstrap_servers))
        self.deps.add(
            POSTGRES, db.postgres_probe(settings.database.database_url, lambda: self.packager.pool)
        )
        self.watchdog = Watchdog(OpsSettings().conn_wedged_after_seconds)
        self.ops: OpsServer | None = None
        if settings.packager.conn_packager_metrics_port:
            self.ops = OpsServer(
                settings.packager.conn_packager_host,
                settings.packager.conn_packager_metrics_port,
                deps=self.deps,
                watchdog=self.watchdog,
            )

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        # The ops server answers first (/readyz names what is missing), then Kafka is
        # waited for with backoff: a packager started before Kafka or the topics does
        # not exit.
        if self.ops is not None:
            await self.ops.start()
        self.deps.start()
        try:
            with self.watchdog.working("discover topics"):
                partitions, ends = await retry(
                    lambda: discover(settings),
                    what="packager: discover",
                    deps=self.deps,
                    stopping=stop,
                )
        except StopRequested:
            log.info("stopped before Kafka was reachable")
            return
        app = build_app(
            settings,
            self.packager,
            partitions=partitions,
            ends=ends,
            deps=self.deps,
            watchdog=self.watchdog,
            ops=self.ops,
        )
        worker = _faust_worker(app)
        log.info(
            "starting packager",
            extra={"app_id": app.conf.id, "partitions": partitions, "schema": settings.schema},
        )
        # The worker's start returns once it stops (it is a daemon) or crashes.
        running = asyncio.create_task(worker.start(), name="packager-worker")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            await worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        if worker.crash_reason is not None:
            log.critical("packager worker crashed", extra={"error": repr(worker.crash_reason)})
            raise SystemExit(1)


def build() -> PackagerService:
    settings = Settings()
    # The packager appends TakeoverPacketPublished: it needs a packager key, now.
    signer_for(settings.kafka, expect_role=SignerRole.PACKAGER)
    return PackagerService(settings)


def run() -> None:
    serve("packager", build)


if __name__ == "__main__":
    run()
