"""Ledger and takeover-packet reads from the PostgreSQL read model the packager writes
(`conn_readmodel.queries`, schema CONN_READ_SCHEMA), with this service's fold as
the fallback.

Decisions and the bridge state never come from here: they stay on the API's own
fold. The read model answers only when it is at least as far as the fold for that
incident (read-your-writes: an answer is never older than what this service just
appended and folded) and agrees with the fold's hash chain at that point; it is
waited for a bounded moment when it lags, and otherwise the fold answers. Every
answer says which one it came from (`source`: "read_model" or "fold").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from conn_readmodel import queries

log = logging.getLogger(__name__)

LAG_BACKOFF_SECONDS = 10.0


def _json(value: Any) -> Any:
    """jsonb arrives as text on pools without a JSON codec (like this service's)."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


class ReadModel:
    def __init__(
        self, pool: asyncpg.Pool, *, schema: str, events_topic: str, wait_seconds: float
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.events_topic = events_topic
        self.wait_seconds = wait_seconds
        self._warned = False
        self._lagging: dict[str, float] = {}

    def _unavailable(self, exc: BaseException) -> None:
        # Not deployed yet (no schema), or PostgreSQL trouble: the fold answers.
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(
            level, "read model unavailable; answering from the fold", extra={"error": repr(exc)}
        )

    async def caught_up(self, incident_id: str, sequence: int, head_hash: str) -> bool:
        """Wait (bounded) until the read model has the incident at least at `sequence`,
        and check it agrees with the fold's chain there."""
        if sequence <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while True:
            try:
                row = await queries.get_incident(self.pool, incident_id, schema=self.schema)
            except (asyncpg.PostgresError, OSError, ValueError) as exc:
                self._unavailable(exc)
                return False
            if row is None:
                return False  # not projected yet (or no packager): the fold answers at once
            if int(row["sequence"]) >= sequence:
                if int(row["sequence"]) == sequence and row["head_hash"] != head_hash:
                    log.error(
                        "read model disagrees with the log's hash chain; answering from the fold",
                        extra={"incident_id": incident_id, "sequence": sequence},
                    )
                    return False
                self._lagging.pop(incident_id, None)
                return True
            if loop.time() >= deadline or self._lagging.get(incident_id, 0.0) > loop.time():
                # lagging: don't make every read of this incident wait while it catches up
                self._lagging[incident_id] = loop.time() + LAG_BACKOFF_SECONDS
                return False
            await asyncio.sleep(0.05)

    async def ledger(
        self,
        incident_id: str,
        *,
        after: int,
        limit: int,
        event_types: Sequence[str] | None,
        correlation_id: str | None,
        actor: str | None,
    ) -> tuple[list[dict[str, Any]], int | None] | None:
        """(items, next_after) in the API's ledger-entry shape, or None if unavailable."""
        items: list[dict[str, Any]] = []
        cursor = after
        batch = min(1000, max(limit + 1, 100))
        try:
            while True:
                rows = await queries.list_ledger(
                    self.pool,
                    incident_id,
                    after_sequence=cursor,
                    limit=batch,
                    event_types=list(event_types) if event_types else None,
                    schema=self.schema,
                )
                for row in rows:
                    cursor = int(row["sequence"])
                    if correlation_id and row["correlation_id"] != correlation_id:
                        continue
                    if actor and row["actor"] != actor:
                        continue
                    if len(items) == limit:
                        return items, items[-1]["sequence"]
                    items.append(self._entry(row))
                if len(rows) < batch:
                    return items, None
        except (asyncpg.PostgresError, OSError, ValueError) as exc:
            self._unavailable(exc)
            return None

    def _entry(self, row: Any) -> dict[str, Any]:
        return {
            "sequence": int(row["sequence"]),
            "hash": row["hash"],
            "position": {
                "topic": self.events_topic,
                "partition": int(row["kafka_partition"]),
                "offset": int(row["kafka_offset"]),
            },
            "event": _json(row["raw"]),
        }

    async def packet(self, incident_id: str, packet_sha256: str) -> dict[str, Any] | None:
        """The stored packet with this sha256 (the latest published one), or None. The
        packager stores a packet before it publishes it, so there is nothing to wait for."""
        try:
            row = await queries.latest_packet(self.pool, incident_id, schema=self.schema)
            if row is not None and row["packet_sha256"] != packet_sha256:
                row = await queries.packet_by_sha256(
                    self.pool, incident_id, packet_sha256, schema=self.schema
                )
        except (asyncpg.PostgresError, OSError, ValueError) as exc:
            self._unavailable(exc)
            return None
        if row is None:
            return None
        generated = row.get("generated_at")
        return {
            "packet": _json(row["packet"]),
            "markdown": row.get("markdown"),
            "generated_at": generated.isoformat() if generated is not None else None,
        }
