"""Stop signals kept in PostgreSQL: the fast path of holds and the kill switch.

The log stays the source of truth (HoldDeclared, KillSwitchEngaged, ...). But an
executor checks for a stop *immediately before every side effect*, and a hold
appended after the directive it is working on sits later in the partition than
it has read. So whoever accepts a hold or the kill switch (the directive API)
also records it here, and the executor reads it right before acting. A
restarting executor therefore also starts stopped when the kill switch is on.

This module owns the table: every service that uses it creates it with `ensure_table`
(one DDL, one advisory lock), never inside its own schema script.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from conn_runtime import db

GLOBAL_SCOPE = "_global"
STOPS_LOCK_KEY = 0x434F4E4E5354  # "CONNST"

STOPS_DDL = """
CREATE TABLE IF NOT EXISTS conn_stops (
    scope        text PRIMARY KEY,          -- incident_id, or '_global' for the kill switch
    engaged      boolean NOT NULL,
    reason       text NOT NULL,
    changed_by   text NOT NULL,
    changed_at   timestamptz NOT NULL,
    event_id     uuid
);
"""


async def ensure_table(pool: asyncpg.Pool) -> None:
    """Create `conn_stops` if missing (idempotent; under its own advisory lock, so the API
    and the executors starting together do not race)."""
    await db.apply_schema(pool, STOPS_DDL, lock_key=STOPS_LOCK_KEY)


@dataclass(frozen=True)
class Stop:
    scope: str
    reason: str
    changed_by: str
    changed_at: datetime


async def set_stop(
    conn: asyncpg.Connection | asyncpg.Pool,
    scope: str,
    *,
    engaged: bool,
    reason: str,
    changed_by: str,
    changed_at: datetime,
    event_id: str | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO conn_stops (scope, engaged, reason, changed_by, changed_at, event_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (scope) DO UPDATE SET engaged = EXCLUDED.engaged, reason = EXCLUDED.reason,
            changed_by = EXCLUDED.changed_by, changed_at = EXCLUDED.changed_at,
            event_id = EXCLUDED.event_id
        WHERE conn_stops.changed_at <= EXCLUDED.changed_at
        """,
        scope,
        engaged,
        reason,
        changed_by,
        changed_at,
        event_id,
    )


async def active_stop(conn: asyncpg.Connection | asyncpg.Pool, incident_id: str) -> Stop | None:
    """The kill switch if engaged, else the incident's hold if engaged, else None."""
    row = await conn.fetchrow(
        """
        SELECT scope, reason, changed_by, changed_at FROM conn_stops
        WHERE engaged AND scope = ANY($1::text[])
        ORDER BY (scope = $2) DESC LIMIT 1
        """,
        [GLOBAL_SCOPE, incident_id],
        GLOBAL_SCOPE,
    )
    if row is None:
        return None
    return Stop(row["scope"], row["reason"], row["changed_by"], row["changed_at"])
