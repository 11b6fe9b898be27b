"""What one API process holds while it runs: producer, fold, database pool, locks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from conn_api.auth import Authenticator
from conn_api.config import Settings
from conn_api.errors import ApiError
from conn_api.readmodel import ReadModel
from conn_api.store import DDL, SCHEMA_LOCK_KEY
from conn_api.view import LogView
from conn_runtime import db
from conn_runtime.kafka import EventProducer, Position
from conn_schemas.events import Envelope
from conn_schemas.signing import SignerRole

log = logging.getLogger(__name__)

PRODUCER = "directive-api"


class Runtime:
    def __init__(self, settings: Settings, auth: Authenticator) -> None:
        self.settings = settings
        self.auth = auth
        self.producer = EventProducer(
            settings.kafka, producer_name=PRODUCER, expect_role=SignerRole.API
        )
        self.view = LogView(settings.kafka, self.producer)
        self.pool: asyncpg.Pool | None = None
        self.read_model: ReadModel | None = None
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.alert_lock = asyncio.Lock()

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "runtime not started"
        return self.pool

    async def start(self, catch_up_timeout: float = 60.0) -> None:
        self.pool = await db.create_pool(self.settings.database.database_url, max_size=10)
        await db.apply_schema(self.pool, DDL, lock_key=SCHEMA_LOCK_KEY)
        api = self.settings.api
        if api.conn_api_read_model:
            self.read_model = ReadModel(
                self.pool,
                schema=api.conn_read_schema,
                events_topic=self.settings.kafka.topics.events,
                wait_seconds=api.conn_api_read_model_wait_seconds,
            )
        await self.producer.start()
        await self.view.start()
        try:
            await asyncio.wait_for(self.view.caught_up.wait(), catch_up_timeout)
        except TimeoutError:
            log.warning("fold not caught up yet; /readyz stays 503 until it is")
        log.info("directive API runtime started", extra={"topics": self.view.topics.model_dump()})

    async def stop(self) -> None:
        await self.view.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.close()

    async def append(self, event: Envelope, *, topic: str | None = None) -> Position:
        try:
            return await self.producer.append(event, topic=topic)
        except KafkaError as exc:
            log.error("append failed", extra={"error": repr(exc), "event_type": event.event_type})
            raise ApiError(503, "unavailable", "the event log is unavailable; retry") from exc

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
