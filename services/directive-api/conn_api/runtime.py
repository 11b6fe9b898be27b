"""What one API process holds while it runs: producer, fold, database pool, locks,
and the state of its dependencies.

`start()` retries every connection with bounded backoff while Kafka or
PostgreSQL is away (the HTTP server already answers: /healthz 200, /readyz 503
naming what is missing, every other route 503 with Retry-After). Afterwards a
monitor probes both every second; a request that needs one that is away is
answered 503 with Retry-After at once instead of waiting on a dead connection."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from conn_adapters.config import Adapters
from conn_api.answers import Answers
from conn_api.auth import Authenticator
from conn_api.config import Settings
from conn_api.errors import ApiError
from conn_api.readmodel import ReadModel
from conn_api.store import DDL, SCHEMA_LOCK_KEY
from conn_api.view import LogView
from conn_runtime import db, stops
from conn_runtime.kafka import AppendOutcomeUnknown, EventProducer, Position, RecordTooLarge
from conn_runtime.ops import RETRY_AFTER_SECONDS, kafka_ready
from conn_runtime.resilience import (
    KAFKA,
    POSTGRES,
    Dependencies,
    Watchdog,
    dependency_of,
    retry,
)
from conn_runtime.settings import OpsSettings
from conn_schemas.events import Envelope
from conn_schemas.signing import SignerRole

log = logging.getLogger(__name__)

PRODUCER = "directive-api"
OUTCOME_UNKNOWN = "outcome_unknown"

_WHAT = {KAFKA: "the event log (Kafka)", POSTGRES: "the database (PostgreSQL)"}


def unavailable(missing: list[str], deps: Dependencies | None = None) -> ApiError:
    """503 + Retry-After naming the dependencies that are away."""
    named = " and ".join(_WHAT.get(n, n) for n in missing) or "a dependency"
    detail: dict[str, object] = {"missing": missing}
    if deps is not None:
        detail["dependencies"] = {n: deps.state(n).as_json() for n in missing}
    return ApiError(
        503,
        "unavailable",
        f"{named} is unavailable; retry",
        detail,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def settle_heap() -> None:
    """Collect what is garbage now, then freeze every object left (the fold caught up
    from the log, modules, schemas) into the collector's permanent generation: a full
    collection no longer walks them. Under intake load the API's full collections walked
    the whole heap several times a second (~0.1 s each on this machine). Frozen objects
    are still freed by reference counting; only a reference cycle among them that
    becomes garbage later is never collected: at most what was alive at catch-up, once
    (the ledgers and the event index keep every event read anyway)."""
    gc.collect()
    gc.freeze()


class Runtime:
    def __init__(
        self, settings: Settings, auth: Authenticator, *, settle_heap: bool = False
    ) -> None:
        self.settings = settings
        self.settle_heap = settle_heap
        """Freeze the heap once the fold has caught up (`settle_heap`): the API process."""
        self.auth = auth
        self.deps = Dependencies()
        self.deps.add(KAFKA, lambda: kafka_ready(settings.kafka.kafka_bootstrap_servers))
        self.deps.add(
            POSTGRES, db.postgres_probe(settings.database.database_url, lambda: self.pool)
        )
        self.watchdog = Watchdog(OpsSettings().conn_wedged_after_seconds)
        self.producer = EventProducer(
            settings.kafka, producer_name=PRODUCER, expect_role=SignerRole.API
        )
        self.view = LogView(settings.kafka, self.producer, deps=self.deps, watchdog=self.watchdog)
        self.pool: asyncpg.Pool | None = None
        self.answers = Answers(lambda: self.db, self.deps)
        """Idempotency answers, stored off the request path (conn_api.answers)."""
        self.started = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.read_model: ReadModel | None = None
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.alert_lock = asyncio.Lock()
        self.adapters: Adapters | None = None
        """Target adapters, built on the first dry run (conn_api.dryrun)."""

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "runtime not started"
        return self.pool

    async def start(
        self, catch_up_timeout: float = 60.0, stopping: asyncio.Event | None = None
    ) -> None:
        self.deps.start()

        async def step(call: Callable[[], Awaitable[object]], what: str) -> None:
            await retry(call, what=f"directive-api: {what}", deps=self.deps, stopping=stopping)

        await step(self._open_pool, "database pool")
        await step(
            lambda: db.apply_schema(self.db, DDL, lock_key=SCHEMA_LOCK_KEY), "database schema"
        )
        await step(lambda: stops.ensure_table(self.db), "stops table")
        api = self.settings.api
        if api.conn_api_read_model:
            self.read_model = ReadModel(
                self.pool,
                schema=api.conn_read_schema,
                events_topic=self.settings.kafka.topics.events,
                wait_seconds=api.conn_api_read_model_wait_seconds,
            )
        await step(self.producer.start, "producer")
        await step(self.view.start, "fold consumer")
        await self.deps.check()  # answer from fresh probes from the first request on
        self.started.set()
        try:
            await asyncio.wait_for(self.view.caught_up.wait(), catch_up_timeout)
        except TimeoutError:
            log.warning("fold not caught up yet; /readyz stays 503 until it is")
        if self.settle_heap:
            settle_heap()
        log.info("directive API runtime started", extra={"topics": self.view.topics.model_dump()})

    async def _open_pool(self) -> None:
        if self.pool is None:
            # No reset query on release (one round trip per statement saved): nothing the
            # API or its console sends leaves session state behind. The alert-intake lock
            # is transaction-level (pg_advisory_xact_lock, SET LOCAL), like apply_schema's;
            # no SET, LISTEN, session-level advisory lock or cursor outside a transaction.
            # tests/api/test_api_round_trips.py counts it.
            self.pool = await db.create_pool(
                self.settings.database.database_url, max_size=10, reset_session=False
            )

    def require(self, *names: str) -> None:
        """503 with Retry-After at once if a dependency this request needs is away."""
        missing = [n for n in names if not self.deps.available(n)]
        if missing:
            raise unavailable(missing, self.deps)

    def settle(self, call: Callable[[], Awaitable[object]], what: str) -> None:
        """Finish a bookkeeping write in the background, waiting out an outage (e.g.
        completing an idempotency key after the event was appended)."""

        async def run() -> None:
            try:
                await retry(call, what=what, deps=self.deps, dependency=POSTGRES)
            except Exception:
                log.exception("could not finish in the background", extra={"what": what})

        task = asyncio.create_task(run(), name=what)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        await self.answers.drain()
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)
        await self.deps.stop()
        if self.adapters is not None:
            with contextlib.suppress(Exception):
                await self.adapters.aclose()
        await self.view.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.close()

    async def append(self, event: Envelope, *, topic: str | None = None) -> Position:
        """Append one event. A record too large is a 413 (not appended); an append whose
        outcome is unknown (no acknowledgement) is a 503 `outcome_unknown` — it may have
        landed, so the client must retry with the same Idempotency-Key, never assume it
        did not. Either way the producer is replaced, so the next append succeeds."""
        self.require(KAFKA)
        try:
            return await self.producer.append(event, topic=topic)
        except RecordTooLarge as exc:
            log.warning("record too large", extra={"event_type": event.event_type})
            raise ApiError(
                413,
                "record_too_large",
                f"the {event.event_type} this request makes is larger than the event log "
                "accepts; nothing was appended",
                {"event_type": event.event_type, "appended": False},
            ) from exc
        except AppendOutcomeUnknown as exc:
            log.error(
                "append outcome unknown",
                extra={"event_type": event.event_type, "event_id": str(event.event_id)},
            )
            raise ApiError(
                503,
                OUTCOME_UNKNOWN,
                f"the event log did not acknowledge the {event.event_type}: it may or may "
                "not have been recorded; retry a directive with the same Idempotency-Key, "
                "or read the ledger before repeating anything else",
                {
                    "event_type": event.event_type,
                    "event_id": str(event.event_id),
                    "correlation_id": event.correlation_id,
                    "appended": None,
                },
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from exc
        except KafkaError as exc:
            if dependency_of(exc) is not None:  # Kafka away (not e.g. a record too large)
                self.deps.report_down(KAFKA, exc)
            log.error("append failed", extra={"error": repr(exc), "event_type": event.event_type})
            raise unavailable([KAFKA], self.deps) from exc

    async def append_and_fold(self, event: Envelope, *, topic: str | None = None) -> dict[str, Any]:
        """Append, then wait (bounded) until our fold applied it: read-your-writes."""
        position = await self.append(event, topic=topic)
        folded = await self.view.wait_applied(
            position, self.settings.api.conn_api_read_your_writes_seconds
        )
        entry = self.view.entry_for(str(event.event_id)) if folded else None
        return {
            "event_id": str(event.event_id),
            "event_type": event.event_type,
            "position": {
                "topic": position.topic,
                "partition": position.partition,
                "offset": position.offset,
            },
            "sequence": entry.sequence if entry is not None else None,
            "hash": entry.hash if entry is not None else None,
            "folded": folded,
        }
