"""The shell every consuming service shares: config -> consume -> fold -> decide/act -> append.

A service subclasses `ConsumerService` and implements `handle(consumed, before)`
where `before` is the incident's state folded from the log prefix *before* this
record. The base class owns the producer, the group consumer (with catch-up
from offset 0 on assignment), a second consumer that reads `conn.control` in
full outside the group (so the kill switch reaches every instance), the
in-memory folds, the ops server and graceful shutdown.

Dependencies (see `conn_runtime.resilience`): the ops server starts first, then
every connection is retried with bounded backoff until it succeeds, so a service
started while Kafka or PostgreSQL is away waits (not ready, naming what is
missing) instead of exiting; afterwards the consumer loop rewinds and backs off
while a dependency is away, and resumes from the committed offset.

A handler that keeps failing for another reason (a bug) is tried
CONN_CONSUMER_HANDLER_ATTEMPTS times on a record; then the record is dead-lettered
(`handler_failed`), the service's `handle_failed` records what it must (the executor:
an outcome for a directive), the record is folded like any other and the loop carries
on. A consumer loop that cannot go on makes the process exit 1.

Every service's entry point (`conn-<name>`, `python -m conn_<pkg>`) is
`serve(name, build)`: JSON logs, `build()` (reads its `Settings`, a
`conn_runtime.settings.ServiceSettings`, and makes the service) inside the event loop,
`run(stop)` until SIGTERM/SIGINT, and the same exit codes everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import uvloop
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from conn_core.state import IncidentState
from conn_runtime import logs
from conn_runtime.folds import IncidentFolds
from conn_runtime.kafka import Consumed, ConsumerLoopFailed, EventLoop, EventProducer
from conn_runtime.ops import OpsServer, kafka_ready, run_until_signalled
from conn_runtime.pipeline import ConsumerSettings
from conn_runtime.resilience import (
    KAFKA,
    Dependencies,
    StopRequested,
    Watchdog,
    dependency_of,
    retry,
)
from conn_runtime.settings import KafkaSettings, OpsSettings
from conn_schemas.signing import SignerRole

log = logging.getLogger(__name__)


# -- the one entry point ---------------------------------------------------------------------


class Service(Protocol):
    """What `serve` runs: consume, answer or work until `stop` is set, then wind down
    (finish what is in hand, commit, close clients) and return."""

    async def run(self, stop: asyncio.Event) -> None: ...


def describe_config_error(exc: BaseException) -> str:
    """One line naming every bad setting (`Model.field: what is wrong`), or the message."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            parts.append(
                f"{exc.title}.{where}: {err['msg']}" if where else f"{exc.title}: {err['msg']}"
            )
        return "; ".join(parts)
    return " ".join(str(exc).split())


GC_THRESHOLDS = (10_000, 20, 10)
"""The cyclic collector's thresholds in every service process (Python's default: 700, 10,
10). With the default, every few hundred allocations a young collection promoted what
the records and requests in hand held, the older generation filled with such objects,
and full collections (each walking the whole heap, folds included) ran several times a
second under load: ~20% of the directive API's CPU under the intake benchmark (helper
`api`'s profile). Reference counting frees almost everything a record or a request
makes; the collector is for cycles, and 10,000 allocations between young collections
bounds what waits for it."""


def serve(name: str, build: Callable[[], Service]) -> None:
    """Run the service `name` (`conn-<name>`): configure JSON logs, call `build()` inside
    the running event loop (aiokafka clients must be made there) and run what it returns
    until SIGTERM/SIGINT.

    The loop is uvloop's (`asyncio.Runner(loop_factory=...)`: uvicorn's `loop="auto"`
    never applies inside a loop made here, so until this every service ran on asyncio's
    pure-Python selector loop although uvloop was pinned), and the collector runs with
    `GC_THRESHOLDS`.

    Exit codes: 0 after a clean stop; 2 with one line on stderr (`conn-<name>: invalid
    configuration: ...`, never a traceback) when the settings, the keys or the keyring,
    or a setting checked at start-up (an adapter's) are unusable — a pydantic
    `ValidationError` or any `ValueError` (`TrustConfigError`, `ProductionConfigError`,
    ...); 1 when a socket cannot be opened or Kafka refuses for good (`OSError`,
    `KafkaError`), or when a consumer loop cannot go on (`ConsumerLoopFailed`: one line
    on stderr, `conn-<name>: consumer loop failed: ...`). A dependency that is merely away
    is waited for, not an exit."""
    logs.configure(name)
    prog = f"conn-{name}"

    async def main(stop: asyncio.Event) -> None:
        service = build()
        await service.run(stop)

    gc.set_threshold(*GC_THRESHOLDS)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run_until_signalled(main))
    except KeyboardInterrupt:
        pass
    except ConsumerLoopFailed as exc:  # logged by the loop, with its traceback
        sys.stderr.write(f"{prog}: consumer loop failed: {exc}\n")
        raise SystemExit(1) from None
    except ValueError as exc:  # ValidationError, TrustConfigError, ... (all ValueErrors)
        message = describe_config_error(exc)
        log.error("invalid configuration", extra={"error": message})
        sys.stderr.write(f"{prog}: invalid configuration: {message}\n")
        raise SystemExit(2) from None
    except (OSError, KafkaError) as exc:  # a port taken, a broker that refuses us...
        log.error("cannot start or go on", extra={"error": repr(exc)}, exc_info=True)
        sys.stderr.write(f"{prog}: cannot start: {exc!r}\n")
        raise SystemExit(1) from None


class AsgiService:
    """An ASGI app served by uvicorn as a `Service` (one worker, in `serve`'s loop): `stop`
    begins uvicorn's graceful shutdown (requests in flight get `graceful_timeout` s)."""

    def __init__(self, app: Any, *, host: str, port: int, graceful_timeout: float = 10.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.graceful_timeout = graceful_timeout

    async def run(self, stop: asyncio.Event) -> None:
        import uvicorn

        from conn_runtime.http_limits import bounded_protocol

        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=self.host,
                port=self.port,
                http=bounded_protocol(),  # a bound on request heads (httptools has none)
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=int(self.graceful_timeout),
            )
        )

        async def stop_on_signal() -> None:
            await stop.wait()
            server.should_exit = True

        # While it serves, uvicorn also handles SIGTERM/SIGINT itself (the same shutdown).
        watcher = asyncio.create_task(stop_on_signal())
        try:
            await server.serve()
        finally:
            watcher.cancel()


class ConsumerService:
    name = "service"
    role: SignerRole | None = None
    """The keyring role this service's signing key must have (checked at start-up)."""
    pipelined = True
    """Consume `conn.events` pipelined (`conn_runtime.pipeline`): each incident in log
    order, incidents independently, offsets committed off the hot path up to the
    lowest unfinished record. On by default since the executor's and the verifier's
    fault and integration tests pass with it (the frozen-member failure was the re-read
    history dropped behind a given-up record: fixed, tests/unit/test_pipeline).
    CONN_CONSUMER_PIPELINED=true/false overrides it per process."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        group_id: str,
        ops_host: str = "127.0.0.1",
        ops_port: int = 0,
        max_in_flight: int = 64,
        follow_control: bool = True,
    ) -> None:
        self.kafka = kafka
        self.topics = kafka.topics
        self.deps = Dependencies()
        self.deps.add(KAFKA, lambda: kafka_ready(kafka.kafka_bootstrap_servers))
        self.watchdog = Watchdog(OpsSettings().conn_wedged_after_seconds)
        self.folds = IncidentFolds()
        self.producer = EventProducer(kafka, producer_name=self.name, expect_role=self.role)
        consuming = ConsumerSettings()
        pipelined = consuming.conn_consumer_pipelined
        self.loop = EventLoop(
            kafka,
            group_id=group_id,
            topics=[self.topics.events],
            handler=self._on_event,
            producer=self.producer,
            name=self.name,
            catch_up=True,
            max_in_flight=max_in_flight,
            on_assigned=self.on_assigned,
            on_revoked=self._on_revoked,
            on_caught_up=self.on_caught_up,
            deps=self.deps,
            watchdog=self.watchdog,
            pipelined=self.pipelined if pipelined is None else pipelined,
            commit_interval=consuming.conn_consumer_commit_interval_seconds,
            drain_timeout=consuming.conn_consumer_drain_seconds,
            handler_attempts=consuming.conn_consumer_handler_attempts,
            on_given_up=self._on_given_up,
        )
        self.control_loop: EventLoop | None = None
        if follow_control:
            self.control_loop = EventLoop(
                kafka,
                group_id=None,
                topics=[self.topics.control],
                handler=self._on_control,
                producer=self.producer,
                name=f"{self.name}-control",
                catch_up=True,
                deps=self.deps,
                watchdog=self.watchdog,
                handler_attempts=consuming.conn_consumer_handler_attempts,
            )
        self.ops = (
            OpsServer(ops_host, ops_port, deps=self.deps, watchdog=self.watchdog)
            if ops_port
            else None
        )
        if self.ops is not None:
            self.ops.add_check("consumer", self._consumer_running)

    async def _consumer_running(self) -> bool:
        return self.loop.ready

    # -- hooks for subclasses ------------------------------------------------------------

    async def setup(self) -> None:
        """Open service-specific resources (database pools, adapters). Retried while a
        dependency is away (`conn_runtime.resilience.dependency_of`), so it must be safe
        to call again after it failed part-way."""

    async def teardown(self) -> None:
        """Close what `setup` opened."""

    async def handle(self, consumed: Consumed, before: IncidentState) -> None:
        """React to one record. `before` is the incident's state before it."""

    async def handle_failed(
        self, consumed: Consumed, before: IncidentState, error: Exception
    ) -> None:
        """`handle` kept failing on this record (CONN_CONSUMER_HANDLER_ATTEMPTS times, for
        a reason that is not a dependency outage) and the loop gave up on it: it has been
        dead-lettered (`handler_failed`) and is folded right after this returns. Record
        what must not be left hanging (e.g. an outcome for a directive). A dependency
        outage raised here is waited out; any other error is logged, and the loop carries
        on. Not called for records re-read as history."""

    async def on_control(self, consumed: Consumed) -> None:
        """React to a `conn.control` record (already folded into `folds.control`)."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Partitions assigned; their history is being re-read from offset 0."""

    async def on_caught_up(self, partitions: set[TopicPartition]) -> None:
        """These partitions' history has been re-read: folds are current."""

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions revoked; their folds are dropped right after this returns."""

    # -- plumbing ------------------------------------------------------------------------

    async def _on_event(self, consumed: Consumed) -> None:
        if not self.folds.is_new(consumed.position, consumed.event.incident_id):
            return  # redelivered: already folded and handled
        before = self.folds.state(consumed.event.incident_id)
        if not consumed.replaying:
            # `before` is the live fold, read-only for the handler; it is
            # advanced past this record only after the handler returned.
            await self.handle(consumed, before)
        if self.loop.current(consumed):
            # Not if the partition was revoked meanwhile (e.g. a consumer paused past
            # its session timeout): its folds were dropped and are rebuilt from
            # offset 0; folding this record into an empty state would leave the
            # incident "not open" for good.
            self.folds.apply(consumed)

    async def _on_given_up(self, consumed: Consumed, error: Exception) -> None:
        """The loop gave up on a record (dead-lettered): the service records what it
        must, then the record is folded like any other. It is in the log, trusted, so
        the fold must hold it, as a replay of the log would."""
        if not self.folds.is_new(consumed.position, consumed.event.incident_id):
            return
        before = self.folds.state(consumed.event.incident_id)
        try:
            if not consumed.replaying:
                await self.handle_failed(consumed, before, error)
        except Exception as exc:
            if isinstance(exc, StopRequested) or dependency_of(exc) is not None:
                raise  # retried by the loop (or redelivered after a restart): not folded yet
            self._fold(consumed)
            raise
        self._fold(consumed)

    def _fold(self, consumed: Consumed) -> None:
        if self.loop.current(consumed):
            self.folds.apply(consumed)

    async def _on_control(self, consumed: Consumed) -> None:
        if self.folds.apply(consumed) and not consumed.replaying:
            await self.on_control(consumed)

    async def _on_revoked(self, partitions: set[TopicPartition]) -> None:
        await self.on_revoked(partitions)
        self.folds.forget(partitions)

    async def start(self, stopping: asyncio.Event | None = None) -> None:
        """Ops server first (it answers while we wait), then every connection, each
        retried with backoff while its dependency is away (until `stopping` is set)."""
        if self.ops is not None:
            await self.ops.start()
        self.deps.start()

        async def step(call: Callable[[], Awaitable[None]], what: str) -> None:
            with self.watchdog.working(f"{self.name}: {what}"):
                await retry(call, what=f"{self.name}: {what}", deps=self.deps, stopping=stopping)

        await step(self.producer.start, "producer")
        await step(self.setup, "setup")
        if self.control_loop is not None:
            await step(self.control_loop.start, "control consumer")
        await step(self.loop.start, "consumer")

    async def stop(self) -> None:
        self.loop.stop_soon()
        if self.control_loop is not None:
            self.control_loop.stop_soon()
        for closer in (
            self.loop.stop,
            *((self.control_loop.stop,) if self.control_loop else ()),
            self.teardown,
            self.producer.stop,
            self.deps.stop,
            *((self.ops.stop,) if self.ops else ()),
        ):
            with contextlib.suppress(Exception):
                await closer()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, consume until `stop` is set, then stop cleanly."""
        try:
            await self.start(stop)
        except StopRequested:
            await self.stop()  # stopped while waiting for a dependency
            return
        log.info(
            "started",
            extra={
                "group": self.loop.group_id,
                "topic": self.topics.events,
                "pipelined": self.loop.pipelined,
            },
        )
        tasks = [asyncio.create_task(self.loop.run(), name=f"{self.name}-events")]
        if self.control_loop is not None:
            tasks.append(asyncio.create_task(self.control_loop.run(), name=f"{self.name}-control"))
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.loop.stop_soon()
            if self.control_loop is not None:
                self.control_loop.stop_soon()
            stopper.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop()
