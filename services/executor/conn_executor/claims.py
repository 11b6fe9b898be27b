"""The executor's claims in PostgreSQL: at most one side effect per correlation ID.

One row per directive the executor has taken up (`correlation_id` PRIMARY KEY).
Lifecycle: claimed -> refused | started -> succeeded | failed | unknown (and
claimed -> succeeded for read-only / record directives).

Fencing: a row carries the consumer-group generation and the executor id that
claimed it. Moving a claim to `started` (the last gate before the side effect)
requires both to still match, so an executor that lost its partitions in a
rebalance (a "zombie" still finishing a handler) cannot act once the new owner
has taken the claim over (which bumps the generation). A row that reached
`started` is never taken over: its outcome is unknown, never re-run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import asyncpg

from conn_runtime.stops import STOPS_DDL

CLAIMS_LOCK_KEY = 0x0C0EC1A1

CLAIMS_DDL = (
    """
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
    + STOPS_DDL
)


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"
    REFUSED = "refused"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


FINAL = frozenset(
    {ClaimStatus.REFUSED, ClaimStatus.SUCCEEDED, ClaimStatus.FAILED, ClaimStatus.UNKNOWN}
)


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
    """Every statement except `mark_started` is safe to repeat (a read, an insert that
    does nothing on conflict, an update guarded by the state it moves from), so they
    go through `persist`, which waits out a PostgreSQL restart. `mark_started` is the
    fenced gate before the side effect and is never repeated blindly: if it fails, the
    record is redelivered and recovery decides from the claim and the log."""

    def __init__(self, pool: asyncpg.Pool, *, persist: Persist = _once) -> None:
        self.pool = pool
        self.persist = persist

    async def try_claim(
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
    ) -> Claim | None:
        """Insert the claim; None if the correlation ID was already claimed (also when
        a repeat after a lost answer finds our own insert: the caller then takes the
        redelivery path, which finishes the claim from the log)."""
        row = await self.persist(
            lambda: self.pool.fetchrow(
                f"""
            INSERT INTO executor_claims (correlation_id, incident_id, action, topic,
                kafka_partition, directive_offset, generation, executor_id, status)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'claimed')
            ON CONFLICT (correlation_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,
                correlation_id,
                incident_id,
                action,
                topic,
                partition,
                offset,
                generation,
                executor_id,
            ),
            "claim a step",
        )
        return None if row is None else _claim(row)

    async def get(self, correlation_id: str) -> Claim | None:
        row = await self.persist(
            lambda: self.pool.fetchrow(
                f"SELECT {_COLUMNS} FROM executor_claims WHERE correlation_id = $1",
                correlation_id,
            ),
            "read a claim",
        )
        return None if row is None else _claim(row)

    async def take_over(self, correlation_id: str, *, generation: int, executor_id: str) -> bool:
        """Take a `claimed` (not started) claim from an older owner: bumps the fencing
        token so the old owner can no longer start it."""
        result = await self.persist(
            lambda: self.pool.execute(
                """
            UPDATE executor_claims SET generation = $2, executor_id = $3, updated_at = now()
            WHERE correlation_id = $1 AND status = 'claimed'
              AND (generation < $2 OR executor_id = $3)
            """,
                correlation_id,
                generation,
                executor_id,
            ),
            "take a claim over",
        )
        return bool(result == "UPDATE 1")

    async def mark_started(self, correlation_id: str, *, generation: int, executor_id: str) -> bool:
        """The fenced gate before a side effect: False if the claim is no longer ours."""
        result = await self.pool.execute(
            """
            UPDATE executor_claims SET status = 'started', started_at = now(), updated_at = now()
            WHERE correlation_id = $1 AND status = 'claimed'
              AND generation = $2 AND executor_id = $3
            """,
            correlation_id,
            generation,
            executor_id,
        )
        return bool(result == "UPDATE 1")

    async def finish(self, correlation_id: str, status: ClaimStatus, detail: str = "") -> None:
        await self.persist(
            lambda: self.pool.execute(
                """
            UPDATE executor_claims SET status = $2, detail = $3, finished_at = now(),
                updated_at = now()
            WHERE correlation_id = $1 AND status IN ('claimed', 'started')
            """,
                correlation_id,
                status.value,
                detail[:1000],
            ),
            "record a claim's outcome",
        )

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
