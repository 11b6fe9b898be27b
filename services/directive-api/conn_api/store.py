"""PostgreSQL tables owned by the directive API: idempotency keys, alert
de-duplication and webhook deliveries already seen. (The stop table `conn_stops` belongs to conn_runtime.stops.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

SCHEMA_LOCK_KEY = 0x434F4E4E4150  # "CONNAP"
ALERT_INTAKE_LOCK_KEY = 0x434F4E4E414C  # "CONNAL"

DDL = """
CREATE TABLE IF NOT EXISTS conn_api_idempotency (
    principal       text NOT NULL,
    idem_key        text NOT NULL,
    incident_id     text NOT NULL,
    request_sha256  text NOT NULL,
    correlation_id  text NOT NULL,
    status_code     integer,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (principal, idem_key)
);
ALTER TABLE conn_api_idempotency
    ADD COLUMN IF NOT EXISTS outcome_unknown boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS conn_api_alerts (
    fingerprint     text PRIMARY KEY,
    source          text NOT NULL,
    service         text NOT NULL,
    status          text NOT NULL,
    incident_id     text,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    last_appended   timestamptz NOT NULL,
    received        integer NOT NULL DEFAULT 1,
    folded_since    integer NOT NULL DEFAULT 0
);
ALTER TABLE conn_api_alerts ADD COLUMN IF NOT EXISTS occurrence text;
CREATE TABLE IF NOT EXISTS conn_api_webhook_deliveries (
    source          text NOT NULL,
    delivery_key    text NOT NULL,
    received_at     timestamptz NOT NULL,
    done            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (source, delivery_key)
);
CREATE INDEX IF NOT EXISTS conn_api_webhook_deliveries_received
    ON conn_api_webhook_deliveries (received_at);
"""


@dataclass(frozen=True)
class IdempotencyRecord:
    request_sha256: str
    correlation_id: str
    status_code: int | None
    response: dict[str, Any] | None
    outcome_unknown: bool = False
    """The append was not acknowledged: it may be in the log (see directives.issue)."""
    age_seconds: float = 0.0
    """Time since the key was claimed (by the database's clock)."""

    @property
    def completed(self) -> bool:
        return self.status_code is not None


async def claim_key(
    pool: asyncpg.Pool,
    *,
    principal: str,
    key: str,
    incident_id: str,
    request_sha256: str,
    correlation_id: str,
) -> IdempotencyRecord | None:
    """Claim an idempotency key in one round trip. None: we own it now. Otherwise the
    existing record (the primary key makes exactly one concurrent claimer win).

    `DO UPDATE` (a no-op: the row is unchanged) rather than `DO NOTHING` so that the
    statement returns the row that won, locked and current, whoever inserted it; ours
    is recognised by its correlation id (a fresh UUID per claim attempt)."""
    row = await pool.fetchrow(
        """
        INSERT INTO conn_api_idempotency
            (principal, idem_key, incident_id, request_sha256, correlation_id)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (principal, idem_key) DO UPDATE SET principal = EXCLUDED.principal
        RETURNING request_sha256, correlation_id, status_code, response, outcome_unknown,
            extract(epoch FROM now() - created_at)::float8 AS age_seconds
        """,
        principal,
        key,
        incident_id,
        request_sha256,
        correlation_id,
    )
    assert row is not None  # INSERT … ON CONFLICT DO UPDATE … RETURNING always returns it
    if row["correlation_id"] == correlation_id:
        return None
    return _record(row)


def _record(row: asyncpg.Record) -> IdempotencyRecord:
    response = json.loads(row["response"]) if row["response"] is not None else None
    return IdempotencyRecord(
        row["request_sha256"],
        row["correlation_id"],
        row["status_code"],
        response,
        bool(row["outcome_unknown"]),
        float(row["age_seconds"]),
    )


async def get_key(pool: asyncpg.Pool, *, principal: str, key: str) -> IdempotencyRecord | None:
    row = await pool.fetchrow(
        "SELECT request_sha256, correlation_id, status_code, response, outcome_unknown,"
        " extract(epoch FROM now() - created_at)::float8 AS age_seconds"
        " FROM conn_api_idempotency WHERE principal = $1 AND idem_key = $2",
        principal,
        key,
    )
    return None if row is None else _record(row)


async def mark_outcome_unknown(pool: asyncpg.Pool, *, principal: str, key: str) -> None:
    """Keep the claim: its append may have landed (a retry looks in the log first)."""
    await pool.execute(
        "UPDATE conn_api_idempotency SET outcome_unknown = true"
        " WHERE principal = $1 AND idem_key = $2 AND status_code IS NULL",
        principal,
        key,
    )


@dataclass(frozen=True)
class Answer:
    """The stored answer of a decided request with an idempotency key."""

    principal: str
    key: str
    status_code: int
    response: dict[str, Any]


def _jsonb(response: dict[str, Any]) -> str:
    # jsonb refuses the escaped NUL that json.dumps writes for a "\x00" in a string.
    return json.dumps(response).replace("\\u0000", "\\ufffd")


async def complete_key(
    pool: asyncpg.Pool, *, principal: str, key: str, status_code: int, response: dict[str, Any]
) -> None:
    await complete_keys(pool, [Answer(principal, key, status_code, response)])


async def complete_keys(pool: asyncpg.Pool, answers: list[Answer]) -> None:
    """Store several answers in one statement."""
    if not answers:
        return
    await pool.execute(
        """
        UPDATE conn_api_idempotency AS i
           SET status_code = a.status_code, response = a.response::jsonb, completed_at = now()
          FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[])
               AS a(principal, idem_key, status_code, response)
         WHERE i.principal = a.principal AND i.idem_key = a.idem_key
        """,
        [a.principal for a in answers],
        [a.key for a in answers],
        [a.status_code for a in answers],
        [_jsonb(a.response) for a in answers],
    )


async def release_key(pool: asyncpg.Pool, *, principal: str, key: str) -> None:
    """Forget an unfinished claim (nothing was appended), so a retry can proceed."""
    await pool.execute(
        "DELETE FROM conn_api_idempotency WHERE principal = $1 AND idem_key = $2"
        " AND status_code IS NULL",
        principal,
        key,
    )


@dataclass(frozen=True)
class Delivery:
    """What we know of a webhook delivery's keys: `new` (claimed now, ours to process),
    `done` (processed already: a replay), or neither (another request is processing it)."""

    new: bool
    done: bool


async def claim_delivery(
    pool: asyncpg.Pool, *, source: str, keys: list[str], now: datetime, window_seconds: float
) -> Delivery:
    """Claim every key of a delivery (e.g. the webhook id and the event id) at once.
    Any key seen within the window makes it a repeat; expired keys are forgotten."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM conn_api_webhook_deliveries WHERE received_at < $1",
            now - timedelta(seconds=window_seconds),
        )
        rows = await conn.fetch(
            "SELECT done FROM conn_api_webhook_deliveries"
            " WHERE source = $1 AND delivery_key = ANY($2::text[]) FOR UPDATE",
            source,
            keys,
        )
        if rows:
            return Delivery(new=False, done=any(r["done"] for r in rows))
        inserted = await conn.fetchval(
            """
            INSERT INTO conn_api_webhook_deliveries (source, delivery_key, received_at)
            SELECT $1, k, $3 FROM unnest($2::text[]) AS k
            ON CONFLICT DO NOTHING RETURNING 1
            """,
            source,
            keys,
            now,
        )
        return Delivery(new=bool(inserted), done=False)


async def finish_delivery(pool: asyncpg.Pool, *, source: str, keys: list[str], ok: bool) -> None:
    """Processed: remember it (a replay is answered as such); failed: forget it, so the
    sender's retry is processed."""
    if ok:
        await pool.execute(
            "UPDATE conn_api_webhook_deliveries SET done = true"
            " WHERE source = $1 AND delivery_key = ANY($2::text[])",
            source,
            keys,
        )
    else:
        await pool.execute(
            "DELETE FROM conn_api_webhook_deliveries"
            " WHERE source = $1 AND delivery_key = ANY($2::text[]) AND NOT done",
            source,
            keys,
        )


class IntakeBusy(Exception):
    """Another API replica held the alert-intake lock longer than we may wait."""


@asynccontextmanager
async def intake_lock(pool: asyncpg.Pool, *, wait_seconds: float) -> AsyncIterator[None]:
    """Alert intake, one at a time across every API replica (a PostgreSQL advisory lock,
    held for the whole intake and released when it ends or its connection dies).

    Without it two replicas that receive the same alert at the same moment (an
    Alertmanager HA pair posts to both) both find no incident yet and open two: each
    decides on its own fold, which has not seen the other's IncidentOpened."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{max(1, int(wait_seconds * 1000))}ms'")
        try:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ALERT_INTAKE_LOCK_KEY)
        except asyncpg.LockNotAvailableError as exc:
            raise IntakeBusy from exc
        yield


async def alert_incidents_since(pool: asyncpg.Pool, *, service: str, since: datetime) -> list[str]:
    """Incidents alerts of `service` were recorded in since `since`, newest first: what
    other replicas appended (their IncidentOpened may not be in our fold yet)."""
    rows = await pool.fetch(
        "SELECT incident_id FROM conn_api_alerts WHERE service = $1"
        " AND incident_id IS NOT NULL AND last_appended >= $2 ORDER BY last_appended DESC",
        service,
        since,
    )
    return list(dict.fromkeys(str(r["incident_id"]) for r in rows))


@dataclass(frozen=True)
class AlertSeen:
    duplicate: bool
    incident_id: str | None
    folded_since: int
    """Duplicates folded since the last AlertReceived appended for this fingerprint."""
    same_occurrence: bool = False
    """The same occurrence as the one recorded (e.g. Alertmanager fingerprint + startsAt)."""
    appended_at: datetime | None = None
    """When an AlertReceived for this fingerprint was last appended (by any replica)."""


async def observe_alert(
    pool: asyncpg.Pool,
    *,
    fingerprint: str,
    source: str,
    service: str,
    status: str,
    now: datetime,
    window_seconds: float,
    occurrence: str | None = None,
) -> AlertSeen:
    """Record a received alert. A repeat with the same status is a duplicate (counted,
    not re-appended) within the window, or at any time for the same `occurrence`
    (an Alertmanager HA pair, or a re-notification, sends the same fingerprint and
    startsAt again)."""
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            """
            INSERT INTO conn_api_alerts (fingerprint, source, service, status, first_seen,
                                         last_seen, last_appended, occurrence)
            VALUES ($1, $2, $3, $4, $5, $5, $5, $6)
            ON CONFLICT (fingerprint) DO NOTHING RETURNING 1
            """,
            fingerprint,
            source,
            service,
            status,
            now,
            occurrence,
        )
        if inserted:
            return AlertSeen(False, None, 0)
        row = await conn.fetchrow(
            "SELECT * FROM conn_api_alerts WHERE fingerprint = $1 FOR UPDATE", fingerprint
        )
        assert row is not None
        age = (now - row["last_appended"]).total_seconds()
        same = occurrence is not None and row["occurrence"] == occurrence
        if (
            row["status"] == status
            and (age < window_seconds or same)
            and row["incident_id"] is not None
        ):
            await conn.execute(
                "UPDATE conn_api_alerts SET received = received + 1,"
                " folded_since = folded_since + 1, last_seen = $2 WHERE fingerprint = $1",
                fingerprint,
                now,
            )
            return AlertSeen(
                True, row["incident_id"], row["folded_since"] + 1, same, row["last_appended"]
            )
        await conn.execute(
            "UPDATE conn_api_alerts SET received = received + 1, status = $2, last_seen = $3,"
            " occurrence = COALESCE($4, occurrence) WHERE fingerprint = $1",
            fingerprint,
            status,
            now,
            occurrence,
        )
        return AlertSeen(False, row["incident_id"], row["folded_since"], same, row["last_appended"])


async def alert_appended(
    pool: asyncpg.Pool, *, fingerprint: str, incident_id: str, now: datetime
) -> None:
    await pool.execute(
        "UPDATE conn_api_alerts SET incident_id = $2, last_appended = $3, folded_since = 0"
        " WHERE fingerprint = $1",
        fingerprint,
        incident_id,
        now,
    )
