"""Kafka plumbing written once: the typed event producer and the consumer loop.

- `EventProducer` appends events to `conn.events` (idempotent, acks=all, key =
  incident_id) and publishes derived records (takeover, dead letters, control).
  Every record it writes (except dead letters, which carry someone else's bytes) is
  signed with the process's own key (`conn-sig`, `conn-kid` headers).
- `EventLoop` consumes one or more topics in a consumer group, decodes AND verifies
  every record (`conn_runtime.trust.Trust.open`: signature, signer, entitlement),
  dead-letters what it cannot read or trust (with the reason and the source
  topic/partition/offset in headers) and carries on, runs
  the handler per incident in log order (incidents in parallel, bounded), and
  commits offsets only after the whole batch has been handled.
- With `pipelined=True` (see `conn_runtime.pipeline`) it does not wait for a batch:
  each incident (on its partition) has one ordered worker, incidents run
  in parallel with at most `max_in_flight` records in flight, fetching goes on while
  steps run, and offsets are committed off the hot path (every
  `commit_interval` seconds, on revoke and on stop) only up to the lowest
  unfinished record of each partition. A failing handler is retried in place (its
  incident's later records wait behind it); on revoke the revoked partitions are
  fenced (nothing more of them is started), their running handlers are waited for
  (at most `drain_timeout`), and only what finished is committed.
- A handler that raises is retried in place with backoff. A dependency outage
  (`conn_runtime.resilience.dependency_of`) is waited out however long it lasts;
  any other error (a bug: KeyError, a pydantic error...) is tried at most
  `handler_attempts` times, then the record is given up: dead-lettered as
  `handler_failed` (acknowledged before anything is committed past it), the
  service told (`on_given_up`), and the loop carries on with the next record.
  Decoding and verifying (admission) never stop the loop either: an unexpected
  error there dead-letters the record as `admission_failed`. If the loop truly
  cannot go on (a dead letter refused for good), `run()` raises
  `ConsumerLoopFailed` after winding down, and the process exits non-zero.
- With `catch_up=True`, every newly assigned partition is re-read from offset 0
  and records below the group's committed offset are handed to the handler
  with `replaying=True`: services rebuild their fold of each incident's prefix
  without repeating side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.structs import RecordMetadata

from conn_runtime import metrics
from conn_runtime.partitioning import WRONG_PARTITION, misplaced
from conn_runtime.pipeline import KeyedWorkers, Watermarks
from conn_runtime.resilience import (
    DEFAULT_BACKOFF,
    Backoff,
    Dependencies,
    StopRequested,
    Watchdog,
    dependency_of,
    describe_failure,
    retry,
)
from conn_runtime.settings import KafkaSettings
from conn_runtime.trust import RecordLike, Signer, Trust, signer_for, trust_for
from conn_schemas.codec import MAX_RECORD_BYTES, UnreadableRecord, encode
from conn_schemas.events import Envelope, Event
from conn_schemas.signing import KEY_ID_HEADER, SIGNATURE_HEADER, SignerRole, UntrustedRecord

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

MAX_REQUEST_SIZE = 2_000_000
DEFAULT_SEND_TIMEOUT = 30.0
"""Seconds to wait for an acknowledgement before the outcome is reported unknown."""
COMMIT_TIMEOUT = 10.0
"""Seconds a pipelined loop's offset commit may take (it is retried at the next one)."""
HANDLER_FAILED = "handler_failed"
"""Dead-letter reason: the handler raised, for a reason that is not a dependency outage,
on every attempt the loop allows (`handler_attempts`)."""
ADMISSION_FAILED = "admission_failed"
"""Dead-letter reason: decoding or verifying the record raised unexpectedly (a bug, not
a refusal: an unreadable or untrusted record has its own reason)."""


class ConsumerLoopFailed(RuntimeError):
    """The consumer loop cannot go on (e.g. a record it gave up on could not be
    dead-lettered, for a reason that is not an outage). `EventLoop.run()` raises it after
    winding down; `conn_runtime.service.serve` exits non-zero, so the supervisor restarts
    the process (which resumes from the committed offset)."""


class RecordTooLarge(KafkaError):  # type: ignore[misc]
    """The record is larger than the client or the broker accepts: it is NOT in the log."""

    retriable = False


class AppendOutcomeUnknown(KafkaError):  # type: ignore[misc]
    """The record may or may not be in the log (no acknowledgement): retry idempotently."""

    retriable = True


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by producers, consumers and admin clients."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password
    return opts


def event_headers(event: Envelope) -> Headers:
    return [
        ("event_type", event.event_type.encode()),
        ("schema_version", str(event.schema_version).encode()),
    ]


@dataclass(frozen=True)
class Position:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int


class EventProducer:
    """Appends events, signed. `append` returns only after the broker acknowledged
    (acks=all), so "recorded in the log before execution" can be relied upon.

    Construction loads the signing key (CONN_SIGNING_KEY_FILE) and finds it in the
    keyring: a process without a valid key cannot append and fails at start-up
    (`TrustConfigError`). `expect_role` makes a service refuse another role's key."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        producer_name: str,
        linger_ms: int = 0,
        expect_role: SignerRole | None = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.name = producer_name
        self.signer: Signer = signer_for(settings, expect_role=expect_role)
        self.linger_ms = linger_ms
        self.send_timeout = send_timeout
        self._producer = self._new_producer()
        self._started = False
        self._broken = False
        """An indefinite error left the client unusable: replaced before the next send."""
        self._reset_lock = asyncio.Lock()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(self.settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
            client_id=self.name,
            max_request_size=MAX_REQUEST_SIZE,
        )

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await self._producer.stop()

    async def _replace(self) -> None:
        """A fresh client (new producer id, sequences from 0) instead of one whose
        idempotent sequence has a gap after a failed or abandoned batch: without this,
        every later send to that partition fails (OutOfOrderSequenceNumber) until restart."""
        async with self._reset_lock:
            if not self._broken:
                return
            old, self._producer = self._producer, self._new_producer()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), 5)
            if self._started:
                await self._producer.start()  # Kafka away: stays broken, retried next send
            self._broken = False
            metrics.PRODUCER_RESETS.labels(producer=self.name).inc()
            log.warning(
                "producer replaced after an indefinite error", extra={"producer": self.name}
            )

    async def _send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> RecordMetadata:
        """Send and wait for the acknowledgement, classifying failures:

        - `RecordTooLarge`: the record was refused (by the client or the broker) and
          is not in the log;
        - `AppendOutcomeUnknown`: no acknowledgement within `send_timeout`, or the
          client failed after the record may have been sent: it may or may not be in
          the log;
        in both cases (and after any other failure once the record was handed to the
        client) the client is replaced before the next send."""
        if self._broken:
            await self._replace()
        try:
            future = await self._producer.send(topic, value, key=key, headers=headers)
        except MessageSizeTooLargeError as exc:  # refused before anything was sent
            raise RecordTooLarge(str(exc)) from exc
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.send_timeout)
        except MessageSizeTooLargeError as exc:  # the broker refused the batch
            await self._replace_now()
            raise RecordTooLarge(str(exc)) from exc
        except (TimeoutError, KafkaTimeoutError) as exc:
            # Replaced before answering: closing the old client settles the record (it
            # lands or is abandoned), so a retry can look for it in the log.
            await self._replace_now()
            raise AppendOutcomeUnknown(f"no acknowledgement within {self.send_timeout}s") from exc
        except KafkaError as exc:
            await self._replace_now()
            if getattr(exc, "errno", None) is not None and not exc.retriable:
                raise  # a definite refusal by the broker (e.g. not authorized)
            raise AppendOutcomeUnknown(repr(exc)) from exc
        except asyncio.CancelledError:
            self._broken = True  # the batch may still go out: fresh sequences next time
            raise

    async def _replace_now(self) -> None:
        self._broken = True
        try:
            await self._replace()
        except (KafkaError, OSError) as exc:  # Kafka away: stays broken, replaced next send
            log.warning("producer not replaced yet", extra={"error": repr(exc)[:300]})

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def principal(self) -> str:
        """The keyring principal this process signs as: its events' `producer`, and
        the id of its service actor."""
        return self.signer.principal.name

    def signed(self, event: Envelope) -> tuple[bytes, Headers]:
        """The record value and headers of `event`, signed with this process's key."""
        value = encode(event)
        return value, [*event_headers(event), *self.signer.headers(value)]

    async def append(self, event: Envelope, *, topic: str | None = None) -> Position:
        """Append one event to `conn.events` (or `topic`), keyed by incident, signed."""
        target = topic or self.topics.events
        value, headers = self.signed(event)
        if len(value) > MAX_RECORD_BYTES:  # every consumer would dead-letter it
            raise RecordTooLarge(f"{len(value)} bytes > {MAX_RECORD_BYTES} (consumers' limit)")
        md = await self._send(target, value, event.incident_id.encode(), headers)
        metrics.RECORDS_PRODUCED.labels(topic=target, event_type=event.event_type).inc()
        return _position(md)

    async def append_many(self, events: Iterable[Envelope]) -> list[Position]:
        """Append several events; all are acknowledged when this returns, in order."""
        if self._broken:
            await self._replace()
        batch = [(event, *self.signed(event)) for event in events]
        # Every record is checked before any goes out: a batch is sent whole or not at all.
        for _, value, _ in batch:
            if len(value) > MAX_RECORD_BYTES:
                raise RecordTooLarge(f"{len(value)} bytes > {MAX_RECORD_BYTES}")
        futures = []
        try:
            for event, value, headers in batch:
                futures.append(
                    await self._producer.send(
                        self.topics.events, value, key=event.incident_id.encode(), headers=headers
                    )
                )
            mds = await asyncio.wait_for(asyncio.gather(*futures), self.send_timeout)
        except (TimeoutError, KafkaTimeoutError) as exc:
            self._broken = True  # a batch may have gone out: fresh sequences
            raise AppendOutcomeUnknown(f"no acknowledgement within {self.send_timeout}s") from exc
        except BaseException:
            self._broken = bool(futures)  # a batch may have gone out: fresh sequences
            raise
        for event, _, _ in batch:
            metrics.RECORDS_PRODUCED.labels(
                topic=self.topics.events, event_type=event.event_type
            ).inc()
        return [_position(md) for md in mds]

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        *,
        sign: bool = True,
    ) -> Position:
        """Publish a derived record (e.g. a takeover packet), signed unless `sign=False`."""
        all_headers = list(headers or [])
        if sign and value is not None:
            all_headers += self.signer.headers(value)
        md = await self._send(topic, value, key, all_headers)
        metrics.RECORDS_PRODUCED.labels(topic=topic, event_type="raw").inc()
        return _position(md)

    async def dead_letter(
        self, record: RecordLike, reason: str, detail: str, consumer: str
    ) -> None:
        """Copy an unreadable or untrusted record to `conn.deadletter` with the reason.
        Not signed by us (the bytes are not ours); the source's own signature headers,
        if any, travel as `dlq.source.conn-sig` / `dlq.source.conn-kid`."""
        headers: Headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.detail", detail[:2000].encode()),
            ("dlq.source.topic", record.topic.encode()),
            ("dlq.source.partition", str(record.partition).encode()),
            ("dlq.source.offset", str(record.offset).encode()),
            ("dlq.consumer", consumer.encode()),
        ]
        for name, value in record.headers or ():
            if name in (SIGNATURE_HEADER, KEY_ID_HEADER) and value is not None:
                headers.append((f"dlq.source.{name}", bytes(value)[:200]))
        await self.publish(self.topics.deadletter, record.key, record.value, headers, sign=False)
        metrics.RECORDS_DEAD_LETTERED.labels(topic=record.topic, reason=reason).inc()
        log.warning(
            "dead-lettered record",
            extra={
                "reason": reason,
                "detail": detail[:300],
                "source": f"{record.topic}/{record.partition}@{record.offset}",
            },
        )


def _position(md: RecordMetadata) -> Position:
    return Position(md.topic, md.partition, md.offset)


@dataclass(frozen=True)
class Consumed:
    """A decoded, verified record handed to a handler."""

    event: Event
    position: Position
    replaying: bool
    """True while re-reading history below the group's committed offset."""
    signer: str = ""
    """The keyring principal whose signature the record carries."""
    epoch: int = 0
    """The loop's assignment epoch of the partition when the record was fetched."""
    signer_role: SignerRole | None = None
    """The keyring role of that principal (what kind of producer signed the record)."""
    record: RecordLike | None = field(default=None, repr=False, compare=False)
    """The record as fetched: what a dead letter copies if the loop gives up on it."""


@dataclass(frozen=True)
class _RecordCopy:
    """A record rebuilt from a `Consumed` made without one (what a dead letter copies)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = -1
    timestamp_type: int = 0


def _raw(item: Consumed) -> RecordLike:
    if item.record is not None:
        return item.record
    p = item.position
    return _RecordCopy(
        p.topic, p.partition, p.offset, item.event.incident_id.encode(), encode(item.event)
    )


Handler = Callable[[Consumed], Awaitable[None]]
GivenUp = Callable[[Consumed, Exception], Awaitable[None]]
"""Told about a record the loop gave up on (its handler's last error), after the dead
letter was acknowledged: e.g. to record an outcome, and to fold the record anyway."""
PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.loop._assigned(set(assigned))


class EventLoop:
    """Consume -> decode and verify -> handle (per incident, in order) -> commit.

    Records that cannot be read or trusted never reach the handler: consumer-group
    owners dead-letter them with the reason; read-only views (`dead_letter=False`)
    skip and count them (`conn_records_untrusted_total`)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str | None,
        topics: list[str],
        handler: Handler,
        producer: EventProducer,
        name: str,
        catch_up: bool = False,
        max_batch: int = 500,
        max_in_flight: int = 64,
        on_assigned: PartitionsCallback | None = None,
        on_revoked: PartitionsCallback | None = None,
        on_caught_up: PartitionsCallback | None = None,
        auto_offset_reset: str = "earliest",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        dead_letter: bool = True,
        deps: Dependencies | None = None,
        watchdog: Watchdog | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        pipelined: bool = False,
        commit_interval: float = 1.0,
        drain_timeout: float = 10.0,
        handler_attempts: int | None = None,
        on_given_up: GivenUp | None = None,
    ) -> None:
        if handler_attempts is not None and handler_attempts < 1:
            raise ValueError("handler_attempts must be at least 1")
        self.settings = settings
        self.trust: Trust = trust_for(settings)
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.producer = producer
        self.name = name
        self.catch_up = catch_up
        self.dead_letter = dead_letter
        """False for read-only views (e.g. the API's fold): leave dead-lettering to the
        consumer groups that own processing, so one bad record is reported once."""
        self.max_batch = max_batch
        self._limit = asyncio.Semaphore(max_in_flight)
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._on_caught_up = on_caught_up
        self._replay_until: dict[TopicPartition, int] = {}
        self._epoch: dict[TopicPartition, int] = {}
        """Bumped on every revoke/assign: records fetched before are not handled after."""
        self._partitions: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self.deps = deps
        self.watchdog = watchdog or Watchdog()
        self.backoff = backoff
        self._failures = 0
        """Consecutive batches that failed (the backoff exponent)."""
        self._consumer_started = False
        self._pending_caught_up: set[TopicPartition] = set()
        """Caught up, but `on_caught_up` failed because a dependency was away: retried
        before the next fetch, so nothing after them is handled first."""
        self.consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            client_id=name,
            isolation_level="read_committed",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_records=max_batch,
        )
        self.ready = False
        self.pipelined = pipelined
        """Per-incident workers and off-path commits (module docstring); False: one
        batch at a time, committed after each batch."""
        self.commit_interval = commit_interval
        self.drain_timeout = drain_timeout
        self.handler_attempts = handler_attempts
        """How many times a handler failing for a reason that is not a dependency outage
        is tried on one record before the record is given up (None: for ever)."""
        self._on_given_up = on_given_up
        self._handler_failures: dict[tuple[str, int, int, int], int] = {}
        """(topic, partition, epoch, offset) -> failed attempts of a record not handled
        yet (kept across a batch loop's rewinds)."""
        self._fatal: BaseException | None = None
        """Why the loop cannot go on (`run()` raises `ConsumerLoopFailed`)."""
        self._marks: Watermarks[TopicPartition] = Watermarks()
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._workers: KeyedWorkers[tuple[TopicPartition, str], Consumed] = KeyedWorkers(
            self._run_one,
            limit=max_in_flight,
            done=self._done,
            name=name,
            # A record given up after a revoke takes the rest of ITS assignment with
            # it, not the history a re-assignment queued behind it.
            related=lambda a, b: a.epoch == b.epoch,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe (or assign). Safe to call again after it failed."""
        if not self._consumer_started:
            await self.consumer.start()
            self._consumer_started = True
        if self.group_id is None:
            # Outside a group nothing is subscribed, so the client has no metadata for
            # our topics yet: fetch it, or partitions_for_topic() answers None.
            await self.consumer._client.set_topics(self.topics)
            partitions = [
                TopicPartition(t, p)
                for t in self.topics
                for p in sorted(self.consumer.partitions_for_topic(t) or ())
            ]
            self.consumer.assign(partitions)
            await self._assigned(set(partitions))
        else:
            self.consumer.subscribe(self.topics, listener=_Rebalance(self))

    def stop_soon(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the loop is told to stop (for retries inside handlers)."""
        return self._stopping

    async def stop(self) -> None:
        self._stopping.set()
        await self._workers.cancel()  # only if run() did not finish them
        await self.consumer.stop()

    def current(self, consumed: Consumed) -> bool:
        """Is the record's partition still assigned as it was when it was fetched?"""
        tp = TopicPartition(consumed.position.topic, consumed.position.partition)
        return self._epoch.get(tp, 0) == consumed.epoch

    def _bump(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._epoch[tp] = self._epoch.get(tp, 0) + 1

    def _misplaced(self, record: ConsumerRecord[Any, Any], event: Event) -> str | None:
        """One incident, one partition: see `conn_runtime.partitioning`."""
        topics = self.settings.topics
        if record.topic not in (topics.events, topics.control):
            return None
        count = self._partitions.get(record.topic)
        if count is None:
            count = len(self.consumer.partitions_for_topic(record.topic) or ())
            if not count:
                return None  # no metadata yet: cannot tell (the fold still keys by partition)
            self._partitions[record.topic] = count
        return misplaced(
            event.incident_id,
            topic=record.topic,
            partition=record.partition,
            partitions=count,
            events_topic=topics.events,
            control_topic=topics.control,
        )

    def generation(self) -> int:
        """The consumer group generation (fencing token), or -1 outside a group."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        return int(getattr(coordinator, "generation", -1) or -1)

    async def run(self) -> None:
        """Run until `stop_soon()`; the caller owns start/stop. Pipelined, it lets the
        running handlers finish (they see `stopping`) and commits what finished."""
        self.ready = True
        committer = None
        if self.pipelined and self.group_id is not None:
            committer = asyncio.create_task(self._commit_periodically(), name=f"{self.name}-commit")
        try:
            while not self._stopping.is_set():
                with self.watchdog.working(self.name):
                    await self._iteration()
        except asyncio.CancelledError:
            await self._workers.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - logged by _fail, raised below
            self._fail(exc)
        finally:
            self.ready = False
            if committer is not None:
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committer
        if self.pipelined:
            try:
                await self._workers.wait(lambda _: True)
            finally:
                await self._workers.cancel()
            await self._commit(None)
        if self._fatal is not None:
            raise ConsumerLoopFailed(
                f"{self.name}: {describe_failure(self._fatal)}"
            ) from self._fatal

    def _fail(self, exc: BaseException) -> None:
        """The loop cannot go on: say so (once), and stop; `run()` then raises."""
        if self._fatal is None:
            self._fatal = exc
            log.error(
                "consumer loop cannot go on; stopping (the process exits non-zero)",
                extra={"consumer": self.name, "error": describe_failure(exc)},
                exc_info=exc,
            )
        self._stopping.set()

    async def _iteration(self) -> None:
        if self._pending_caught_up:
            await self._retry_caught_up()
            return
        try:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        except KafkaError as exc:
            self._note_failure(exc, "fetch failed, retrying")
            await self._pause()
            return
        if batch:
            if self.pipelined:
                await self._dispatch(batch)
            else:
                await self._process(batch)
        await self._report_lag()

    def _note_failure(
        self, exc: BaseException, message: str, extra: Mapping[str, object] | None = None
    ) -> None:
        if self.deps is not None:
            self.deps.report(exc)
        log.warning(
            message, extra={"consumer": self.name, "error": repr(exc)[:300], **(extra or {})}
        )

    async def _pause(self) -> None:
        """Back off after a failed fetch or batch (bounded, jittered), unless stopping."""
        delay = self.backoff.delay(self._failures)
        self._failures += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _report_caught_up(self, partitions: set[TopicPartition]) -> None:
        if not partitions or self._on_caught_up is None:
            return
        try:
            await self._on_caught_up(partitions)
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
            self._note_failure(exc, "on_caught_up failed (dependency away); will retry")
            self._pending_caught_up |= partitions

    async def _retry_caught_up(self) -> None:
        callback = self._on_caught_up
        assert callback is not None

        async def once() -> None:
            pending = set(self._pending_caught_up)
            parts = pending & self.consumer.assignment()
            if parts:
                await callback(parts)
            self._pending_caught_up -= pending

        with contextlib.suppress(StopRequested):
            await retry(
                once,
                what=f"{self.name}: on_caught_up",
                deps=self.deps,
                backoff=self.backoff,
                stopping=self._stopping,
            )

    # -- rebalance ---------------------------------------------------------------------

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        self._bump(assigned)
        for tp in assigned:
            self._committed.pop(tp, None)
        if self.catch_up and assigned:
            for tp in assigned:
                committed = await self.consumer.committed(tp) if self.group_id else None
                if committed is None:
                    committed = 0 if self.group_id else (await self.consumer.end_offsets([tp]))[tp]
                self._replay_until[tp] = committed
            await self.consumer.seek_to_beginning(*assigned)
            await self._finish_catch_up_if_empty(assigned)
        if self._on_assigned is not None:
            await self._on_assigned(assigned)

    async def _finish_catch_up_if_empty(self, assigned: set[TopicPartition]) -> None:
        starts = await self.consumer.beginning_offsets(list(assigned))
        done = {tp for tp in assigned if self._replay_until.get(tp, 0) <= starts[tp]}
        for tp in done:
            self._replay_until.pop(tp, None)
        await self._report_caught_up(done)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        before = {tp: self._epoch.get(tp, 0) for tp in revoked}
        self._bump(revoked)  # fenced: nothing more of these partitions is started
        if self.pipelined:
            await self._settle_revoked(revoked, before)
        for tp in revoked:
            self._replay_until.pop(tp, None)
        gone = {(tp.topic, tp.partition) for tp in revoked}
        for key in [k for k in self._handler_failures if k[:2] in gone]:
            del self._handler_failures[key]
        self._pending_caught_up -= revoked
        if self._on_revoked is not None:
            await self._on_revoked(revoked)

    # -- processing --------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        epochs = {tp: self._epoch.get(tp, 0) for tp in batch}
        groups: dict[tuple[TopicPartition, str], list[Consumed]] = defaultdict(list)
        commit: dict[TopicPartition, int] = {}
        caught_up: set[TopicPartition] = set()
        for tp, records in batch.items():
            for record in records:
                if self._epoch.get(tp, 0) != epochs[tp]:
                    break  # revoked (and maybe re-assigned) meanwhile: not ours to handle
                metrics.RECORDS_CONSUMED.labels(topic=record.topic, consumer=self.name).inc()
                until = self._replay_until.get(tp)
                replaying = until is not None and record.offset < until
                try:
                    item = await self._admitted(record, replaying, epochs[tp])
                except StopRequested:
                    break  # stopping during an outage: left (uncommitted) for the next run
                if self._epoch.get(tp, 0) != epochs[tp]:
                    break
                commit[tp] = record.offset + 1
                if until is not None and record.offset + 1 >= until:
                    self._replay_until.pop(tp, None)
                    caught_up.add(tp)
                if item is not None:
                    # By the verified incident, not the record's key (a producer may key
                    # a record differently): one incident, one ordered sequence.
                    groups[(tp, item.event.incident_id)].append(item)

        failed = await self._handle_groups(groups)
        for tp, epoch in epochs.items():
            if self._epoch.get(tp, 0) != epoch:
                # Revoked during the batch: its new owner (or our own re-assignment,
                # re-read from offset 0) handles from the committed offset.
                commit.pop(tp, None)
                caught_up.discard(tp)
                failed.pop(tp, None)
        if failed:
            # Do not commit past a failure: rewind those partitions and try again.
            for tp, offset in failed.items():
                commit.pop(tp, None)
                self.consumer.seek(tp, offset)
            await self._pause()
        else:
            self._failures = 0
        if self.group_id is not None and commit:
            try:
                await self.consumer.commit(commit)
            except KafkaError as exc:  # rebalance in progress: records are redelivered
                if self.deps is not None:
                    self.deps.report(exc)
                log.warning("commit failed", extra={"error": repr(exc)})
        await self._report_caught_up(caught_up)

    async def _handle_groups(
        self, groups: dict[tuple[TopicPartition, str], list[Consumed]]
    ) -> dict[TopicPartition, int]:
        failed: dict[TopicPartition, int] = {}

        async def run_group(tp: TopicPartition, items: list[Consumed]) -> None:
            async with self._limit:
                for item in items:
                    if tp in failed or not self.current(item):
                        return
                    try:
                        # A dependency away: False at once (rewind and back off).
                        handled = await self._handle(item, in_place=False)
                    except Exception as exc:  # noqa: BLE001 - could not be given up: _fail
                        self._fail(exc)
                        handled = False
                    if not handled:
                        failed[tp] = min(failed.get(tp, item.position.offset), item.position.offset)
                        return

        await asyncio.gather(*(run_group(tp, items) for (tp, _), items in groups.items()))
        return failed

    # -- pipelined processing ------------------------------------------------------------

    async def _admit(
        self, record: ConsumerRecord[Any, Any], replaying: bool, epoch: int
    ) -> Consumed | None:
        """Decode and verify one record; dead-letter (unless replaying or a read-only
        view) what cannot be read, trusted or is on the wrong partition."""
        try:
            trusted = self.trust.open(record)
        except UnreadableRecord as exc:
            if isinstance(exc, UntrustedRecord):
                metrics.RECORDS_UNTRUSTED.labels(consumer=self.name, reason=exc.reason).inc()
            if not replaying and self.dead_letter:
                await self.producer.dead_letter(record, exc.reason, exc.detail, self.name)
            return None
        wrong = self._misplaced(record, trusted.event)
        if wrong is not None:
            if not replaying and self.dead_letter:
                await self.producer.dead_letter(record, WRONG_PARTITION, wrong, self.name)
            return None
        position = Position(record.topic, record.partition, record.offset)
        return Consumed(
            trusted.event, position, replaying, trusted.principal, epoch, trusted.role, record
        )

    async def _admitted(
        self, record: ConsumerRecord[Any, Any], replaying: bool, epoch: int
    ) -> Consumed | None:
        """`_admit`, made safe for the loop. Dead-lettering while Kafka is away is
        waited out (retried with backoff); an unexpected error in decoding or verifying
        (a bug, not a refusal) dead-letters the record as `admission_failed`, and the
        loop carries on. Raises `StopRequested` when the loop stops during an outage
        (the record is left, uncommitted, for the next run), and what dead-lettering
        raised if it failed for a reason that is not an outage (the loop cannot go on)."""

        async def once() -> Consumed | None:
            try:
                return await self._admit(record, replaying, epoch)
            except Exception as exc:
                if isinstance(exc, StopRequested) or dependency_of(exc) is not None:
                    raise
                failure = exc
            detail = describe_failure(failure)
            dead_letter = not replaying and self.dead_letter
            if dead_letter:
                await self.producer.dead_letter(record, ADMISSION_FAILED, detail, self.name)
            metrics.RECORDS_GIVEN_UP.labels(consumer=self.name, reason=ADMISSION_FAILED).inc()
            log.error(
                "record admission failed unexpectedly; record skipped",
                extra={
                    "consumer": self.name,
                    "source": f"{record.topic}/{record.partition}@{record.offset}",
                    "error": detail,
                    "dead_lettered": dead_letter,
                },
                exc_info=failure,
            )
            return None

        return await retry(
            once,
            what=f"{self.name}: admit a record",
            deps=self.deps,
            backoff=self.backoff,
            stopping=self._stopping,
        )

    async def _dispatch(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Hand each record to its incident's worker (waiting while `max_in_flight`
        records are unfinished) and go back to fetching without waiting for them."""
        for tp, records in batch.items():
            epoch = self._epoch.get(tp, 0)
            for record in records:
                if self._epoch.get(tp, 0) != epoch or self._stopping.is_set():
                    break  # revoked (and maybe re-assigned) meanwhile: not ours to handle
                metrics.RECORDS_CONSUMED.labels(topic=record.topic, consumer=self.name).inc()
                until = self._replay_until.get(tp)
                replaying = until is not None and record.offset < until
                caught_up = until is not None and record.offset + 1 >= until
                try:
                    item = await self._admitted(record, replaying, epoch)
                except StopRequested:
                    break  # stopping during an outage: left (uncommitted) for the next run
                if self._epoch.get(tp, 0) != epoch:
                    break
                if caught_up:
                    self._replay_until.pop(tp, None)
                if item is None:
                    self._marks.skipped(tp, epoch, record.offset)
                else:
                    self._marks.started(tp, epoch, record.offset)
                    await self._workers.submit((tp, item.event.incident_id), item)
                if caught_up and not await self._caught_up_barrier(tp, epoch):
                    if self._epoch.get(tp, 0) == epoch and not self._stopping.is_set():
                        # on_caught_up failed (a dependency is away) and must run before
                        # anything after the history: the rest of this partition's
                        # records are fetched again once it did.
                        self.consumer.seek(tp, record.offset + 1)
                    break

    async def _caught_up_barrier(self, tp: TopicPartition, epoch: int) -> bool:
        """The partition's history has been handed out: wait until it is handled, then
        report it caught up. False if records after it must not be handled yet."""
        await self._workers.wait(lambda key: key[0] == tp)
        if self._epoch.get(tp, 0) != epoch or self._marks.unfinished(tp):
            return False  # revoked, or given up because we are stopping
        await self._report_caught_up({tp})
        return tp not in self._pending_caught_up

    async def _run_one(self, item: Consumed) -> bool:
        """A pipelined worker's record: handled in place (`_handle`); False when given
        up (stopping, or its partition revoked): it stays unfinished, not committed."""
        try:
            return await self._handle(item, in_place=True)
        except Exception as exc:  # noqa: BLE001 - could not be given up: _fail logs it
            self._fail(exc)
            return False

    async def _handle(self, item: Consumed, *, in_place: bool) -> bool:
        """Run the handler until the record is handled; True when it was (or when it was
        given up: `_give_up`). An error that is not a dependency outage is retried in
        place with backoff, `handler_attempts` times in all; a dependency outage is
        retried in place too when `in_place` (pipelined), else reported at once (False:
        the batch loop rewinds the partition and backs off). False as well when the loop
        stops or the partition was revoked: the record is not finished."""
        attempt = 0
        extra: dict[str, object] = {
            "consumer": self.name,
            "event_type": item.event.event_type,
            "offset": item.position.offset,
        }
        while True:
            if self._stopping.is_set() or not self.current(item):
                return False
            started = time.perf_counter()
            try:
                await self.handler(item)
            except StopRequested:
                log.info("stopping; the record will be redelivered", extra=extra)
                return False
            except Exception as exc:  # noqa: BLE001 - retried, counted, logged, given up
                if dependency_of(exc) is not None:
                    # A dependency is away: no trace, and it never counts as an attempt.
                    self._note_failure(exc, "handler waits for a dependency; will retry", extra)
                    if not in_place:
                        return False
                else:
                    failures = self._handler_failed(item)
                    if self.handler_attempts is not None and failures >= self.handler_attempts:
                        return await self._give_up(item, exc, failures)
                    (log.exception if failures == 1 else log.warning)(
                        "handler failed; will retry",
                        extra={
                            **extra,
                            "attempt": failures,
                            "attempts": self.handler_attempts,
                            "error": describe_failure(exc),
                        },
                    )
            else:
                self._handler_failures.pop(self._failure_key(item), None)
                return True
            finally:
                metrics.HANDLE_SECONDS.labels(consumer=self.name).observe(
                    time.perf_counter() - started
                )
            delay = self.backoff.delay(attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    @staticmethod
    def _failure_key(item: Consumed) -> tuple[str, int, int, int]:
        p = item.position
        return (p.topic, p.partition, item.epoch, p.offset)

    def _handler_failed(self, item: Consumed) -> int:
        """Count one more failed attempt of the record's handler; returns the total."""
        key = self._failure_key(item)
        failures = self._handler_failures.get(key, 0) + 1
        self._handler_failures[key] = failures
        return failures

    async def _give_up(self, item: Consumed, error: Exception, attempts: int) -> bool:
        """The handler failed `attempts` times for a reason that is not a dependency
        outage: dead-letter the record (`handler_failed`, with the error's type and a
        bounded message; waited for through outages: nothing is committed past the
        record before the dead letter is acknowledged), tell the service
        (`on_given_up`), and count the record as handled. Records re-read as history
        and read-only views are not dead-lettered (as for refused records). False when
        the loop stops meanwhile (the record is redelivered after the restart)."""
        self._handler_failures.pop(self._failure_key(item), None)
        detail = describe_failure(error)
        dead_letter = self.dead_letter and not item.replaying
        record = _raw(item)
        try:
            if dead_letter:
                await retry(
                    lambda: self.producer.dead_letter(record, HANDLER_FAILED, detail, self.name),
                    what=f"{self.name}: dead-letter a record its handler failed on",
                    deps=self.deps,
                    backoff=self.backoff,
                    stopping=self._stopping,
                )
        except StopRequested:
            return False
        metrics.RECORDS_GIVEN_UP.labels(consumer=self.name, reason=HANDLER_FAILED).inc()
        log.error(
            "handler failed on every attempt; record given up",
            extra={
                "consumer": self.name,
                "source": f"{record.topic}/{record.partition}@{record.offset}",
                "event_type": item.event.event_type,
                "incident_id": item.event.incident_id,
                "attempts": attempts,
                "error": detail,
                "dead_lettered": dead_letter,
            },
            exc_info=error,
        )
        callback = self._on_given_up
        if callback is not None and self.current(item):
            try:
                await retry(
                    lambda: callback(item, error),
                    what=f"{self.name}: on_given_up",
                    deps=self.deps,
                    backoff=self.backoff,
                    stopping=self._stopping,
                )
            except StopRequested:
                return False
            except Exception:
                log.exception(
                    "on_given_up failed; the record stays given up",
                    extra={"consumer": self.name, "offset": item.position.offset},
                )
        return True

    def _done(self, item: Consumed, finished: bool) -> None:
        if finished:
            tp = TopicPartition(item.position.topic, item.position.partition)
            self._marks.finished(tp, item.epoch, item.position.offset)

    async def _settle_revoked(
        self, revoked: set[TopicPartition], epochs: dict[TopicPartition, int]
    ) -> None:
        """Wait (bounded) for the running handlers of revoked partitions, commit what
        they finished, then forget the partitions' marks."""
        if self.group_id is not None and self.generation() < 0:
            # Expelled (e.g. frozen past the session timeout): the partitions may already
            # be someone else's and nothing can be committed. Fenced only; a handler
            # still running finishes on its own, under its claim's fence.
            self._marks.forget(revoked)
            for tp in revoked:
                self._committed.pop(tp, None)
            return
        drained = await self._workers.wait(lambda key: key[0] in revoked, self.drain_timeout)
        if not drained:
            log.warning(
                "handlers of revoked partitions still running; their records are not "
                "committed (the new owner handles them again, fenced by its claims)",
                extra={"consumer": self.name},
            )
        if self.group_id is not None:
            await self._commit(epochs)
        self._marks.forget(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self._commit(None)

    async def _commit(self, epochs: dict[TopicPartition, int] | None) -> None:
        """Commit, for each partition still assigned in the given epoch (None: the
        current ones), its lowest unfinished offset if it moved."""
        async with self._commit_lock:
            assigned = self.consumer.assignment()
            wanted = (
                epochs
                if epochs is not None
                else {tp: self._epoch.get(tp, 0) for tp in self._marks.partitions()}
            )
            offsets: dict[TopicPartition, int] = {}
            for tp, epoch in wanted.items():
                if tp not in assigned or self._marks.epoch(tp) != epoch:
                    continue
                offset = self._marks.committable(tp)
                if offset is not None and self._committed.get(tp) != offset:
                    offsets[tp] = offset
            if not offsets:
                return
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                # cancellation of a commit that completes at the same moment.
                async with asyncio.timeout(COMMIT_TIMEOUT):
                    await self.consumer.commit(offsets)
            except (KafkaError, TimeoutError) as exc:  # rebalance: records are redelivered
                log.warning("commit failed", extra={"consumer": self.name, "error": repr(exc)})
                return
            self._committed.update(offsets)

    async def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await self.consumer.position(tp)
            except KafkaError:
                continue
            metrics.CONSUMER_LAG.labels(
                consumer=self.name, topic=tp.topic, partition=str(tp.partition)
            ).set(max(0, high - position))
