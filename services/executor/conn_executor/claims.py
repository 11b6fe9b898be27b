"""The executor's claims in PostgreSQL: at most one side effect per correlation ID.

One row per directive the executor has taken up (`correlation_id` PRIMARY KEY).
Life cycle (`conn_executor.lifecycle`): claimed -> refused | started -> succeeded |
failed | unknown (and claimed -> succeeded / failed for read-only, record and
not-started directives).

Fencing: a row carries the consumer-group generation and the executor id that
owns it, and EVERY transition requires both to still match: `start` (the gate
before the side effect), `finish`, and `take_over` (which only a newer generation,
or the owner itself, may do, and which bumps the fencing token). An executor that
lost its partitions in a rebalance (a "zombie" still finishing a handler) can
therefore neither act nor change the claim once the new owner took it over.

The gate is one SQL statement that also reads the stops table: a hold or the kill
switch committed before it always wins (the directive API commits the stop row
before it answers). A row that reached `started` is never run again: its outcome
is unknown unless recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from conn_executor.lifecycle import FINAL, ClaimStatus
from conn_runtime.stops import GLOBAL_SCOPE, Stop

__all__ = ["CLAIMS_DDL", "CLAIMS_LOCK_KEY", "Claim", "ClaimStatus", "ClaimStore", "Gate"]

CLAIMS_LOCK_KEY = 0x0C0EC1A1

CLAIMS_DDL = """
CREATE TABLE IF NOT EXISTS executor_claims (
    correlation_id   text PRIMARY KEY,
    incident_id      text NOT NULL,
    action           text NOT NULL,
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    directive_offset bigint NOT NULL,
    generation       integer NOT NULL,
    executor_id      text NOT NULL,
    status           text NOT NULL CHECK (status IN
                         ('claimed', 'refused', 'started', 'succeeded', 'failed', 'unknown')),
    detail           text NOT NULL DEFAULT '',
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS executor_claims_open
    ON executor_claims (topic, kafka_partition) WHERE status IN ('claimed', 'started');
"""
"""The executor's own table (the stops table it reads is `conn_runtime.stops`')."""


@dataclass(frozen=True)
class Claim:
    correlation_id: str
    incident_id: str
    action: str
    topic: str
    partition: int
    directive_offset: int
    generation: int
    executor_id: str
    status: ClaimStatus
    detail: str
    claimed_at: datetime

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class Gate:
    """The answer of the gate before a side effect."""

    started: bool
    """True: the claim is now `started`; act."""
    stop_scope: str | None = None
    """A stop was engaged ('_global' = kill switch, else the incident): do not act."""
    stop_reason: str = ""
    stop_changed_at: datetime | None = None

    @property
    def fenced(self) -> bool:
        """Neither started nor stopped: the claim is no longer ours (or not claimed)."""
        return not self.started and self.stop_scope is None


def _claim(row: asyncpg.Record) -> Claim:
    return Claim(
        correlation_id=row["correlation_id"],
        incident_id=row["incident_id"],
        action=row["action"],
        topic=row["topic"],
        partition=row["kafka_partition"],
        directive_offset=row["directive_offset"],
        generation=row["generation"],
        executor_id=row["executor_id"],
        status=ClaimStatus(row["status"]),
        detail=row["detail"],
        claimed_at=row["claimed_at"],
    )


_COLUMNS = (
    "correlation_id, incident_id, action, topic, kafka_partition, directive_offset, "
    "generation, executor_id, status, detail, claimed_at"
)


T = TypeVar("T")
Persist = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]
"""`persist(call, what)`: run `call` (retrying while PostgreSQL is away)."""


async def _once(call: Callable[[], Awaitable[T]], _what: str) -> T:
    return await call()


class ClaimStore:
    """Every statement except `start` is safe to repeat (a read, an insert that
    does nothing on conflict, an update guarded by the state it moves from), so they
    go through `persist`, which waits out a PostgreSQL restart. `start` is the
    fenced gate before the side effect and is never repeated blindly: if it fails, the
    record is redelivered and recovery decides from the claim and the log."""

    def __init__(self, pool: asyncpg.Pool, *, persist: Persist = _once) -> None:
        self.pool = pool
        self.persist = persist

    async def claim_reading_stop(
        self,
        *,
        correlation_id: str,
        incident_id: str,
        action: str,
        topic: str,
        partition: int,
        offset: int,
        generation: int,
        executor_id: str,
    ) -> tuple[Claim | None, Stop | None]:
        """Insert the claim and, in the same statement (one round trip), read the stop
        in force for the incident (the kill switch first) as
        `conn_runtime.stops.active_stop` reads it: what the decision before accepting
        the step checks. This is not the check before the side effect: that one is the
        gate (`start`).

        The claim is None if the correlation ID was already claimed (also when a repeat
        after a lost answer finds our own insert: the caller then takes the redelivery
        path, which finishes the claim from the log)."""
        row = await self.persist(
            lambda: self.pool.fetchrow(
                f"""
            WITH stop AS (
                SELECT scope, reason, changed_by, changed_at FROM conn_stops
                WHERE engaged AND scope = ANY($9::text[])
                ORDER BY (scope = $10) DESC LIMIT 1
            ), claim AS (
                INSERT INTO executor_claims (correlation_id, incident_id, action, topic,
                    kafka_partition, directive_offset, generation, executor_id, status)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'claimed')
                ON CONFLICT (correlation_id) DO NOTHING
                RETURNING {_COLUMNS}
            )
            SELECT claim.*, stop.scope AS stop_scope, stop.reason AS stop_reason,
                   stop.changed_by AS stop_changed_by, stop.changed_at AS stop_changed_at
            FROM (SELECT 1) AS one
            LEFT JOIN claim ON true
            LEFT JOIN stop ON true
            """,
                correlation_id,
                incident_id,
                action,
                topic,
                partition,
                offset,
                generation,
                executor_id,
                [GLOBAL_SCOPE, incident_id],
                GLOBAL_SCOPE,
            ),
            "claim a step",
        )
        assert row is not None
        claim = None if row["correlation_id"] is None else _claim(row)
        stop = (
            None
            if row["stop_scope"] is None
            else Stop(
                row["stop_scope"],
                row["stop_reason"],
                row["stop_changed_by"],
                row["stop_changed_at"],
            )
        )
        return claim, stop

    async def get(self, correlation_id: str) -> Claim | None:
        row = await self.persist(
            lambda: self.pool.fetchrow(
                f"SELECT {_COLUMNS} FROM executor_claims WHERE correlation_id = $1",
                correlation_id,
            ),
            "read a claim",
        )
        return None if row is None else _claim(row)

    async def take_over(
        self, correlation_id: str, *, generation: int, executor_id: str
    ) -> Claim | None:
        """Become the owner of an unfinished claim (claimed or started): only with a
        newer generation than its owner's, or as its owner. Bumps the fencing token,
        so the previous owner can no longer start or finish it. Returns the claim as
        it was before (its previous owner and status), or None if fenced off. Safe to
        repeat (as its new owner it succeeds again), so it waits out a PostgreSQL restart."""
        result: Claim | None = await self.persist(
            lambda: self._take_over(correlation_id, generation, executor_id), "take a claim over"
        )
        return result

    async def _take_over(
        self, correlation_id: str, generation: int, executor_id: str
    ) -> Claim | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM executor_claims WHERE correlation_id = $1 FOR UPDATE",
                correlation_id,
            )
            if row is None:
                return None
            before = _claim(row)
            if before.final or not (
                before.generation < generation or before.executor_id == executor_id
            ):
                return None
            await conn.execute(
                """
                UPDATE executor_claims SET generation = $2, executor_id = $3, updated_at = now()
                WHERE correlation_id = $1
                """,
                correlation_id,
                generation,
                executor_id,
            )
            return before

    async def start(
        self, correlation_id: str, *, generation: int, executor_id: str, incident_id: str
    ) -> Gate:
        """The gate before a side effect, in ONE statement: the claim moves to
        `started` only if it is still ours (generation + executor id), still
        `claimed`, and neither the kill switch nor the incident's hold is engaged in
        the stops table. A stop committed before this statement always wins. Never
        repeated blindly (not through `persist`): if it fails, the record is redelivered
        and recovery decides from the claim and the log."""
        row = await self.pool.fetchrow(
            """
            WITH stop AS (
                SELECT scope, reason, changed_at FROM conn_stops
                WHERE engaged AND scope = ANY($4::text[])
                ORDER BY (scope = $5) DESC LIMIT 1
            ), gate AS (
                UPDATE executor_claims SET status = 'started', started_at = now(),
                    updated_at = now()
                WHERE correlation_id = $1 AND status = 'claimed'
                  AND generation = $2 AND executor_id = $3
                  AND NOT EXISTS (SELECT 1 FROM stop)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gate) AS started,
                   (SELECT scope FROM stop) AS scope,
                   (SELECT reason FROM stop) AS reason,
                   (SELECT changed_at FROM stop) AS changed_at
            """,
            correlation_id,
            generation,
            executor_id,
            [GLOBAL_SCOPE, incident_id],
            GLOBAL_SCOPE,
        )
        assert row is not None
        return Gate(
            started=bool(row["started"]),
            stop_scope=row["scope"],
            stop_reason=row["reason"] or "",
            stop_changed_at=row["changed_at"],
        )

    async def finish(
        self,
        correlation_id: str,
        status: ClaimStatus,
        detail: str = "",
        *,
        generation: int,
        executor_id: str,
    ) -> bool:
        """Close the claim (fenced): False if it is not ours or already final. Safe to
        repeat (guarded by the state it moves from); a repeat after a lost answer
        reports False."""
        result = await self.persist(
            lambda: self.pool.execute(
                """
            UPDATE executor_claims SET status = $2, detail = $3, finished_at = now(),
                updated_at = now()
            WHERE correlation_id = $1 AND status IN ('claimed', 'started')
              AND generation = $4 AND executor_id = $5
              AND (status = 'claimed' OR $2 IN ('succeeded', 'failed', 'unknown'))
            """,
                correlation_id,
                status.value,
                detail[:1000],
                generation,
                executor_id,
            ),
            "record a claim's outcome",
        )
        return bool(result == "UPDATE 1")

    async def open_claims(self, topic: str, partitions: list[int]) -> list[Claim]:
        rows = await self.persist(
            lambda: self.pool.fetch(
                f"""
            SELECT {_COLUMNS} FROM executor_claims
            WHERE topic = $1 AND kafka_partition = ANY($2::int[])
              AND status IN ('claimed', 'started')
            ORDER BY directive_offset
            """,
                topic,
                partitions,
            ),
            "read open claims",
        )
        return [_claim(r) for r in rows]
