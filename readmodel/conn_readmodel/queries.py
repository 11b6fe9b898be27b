"""Read-model queries for other services (e.g. the directive API).

All take an asyncpg pool or connection (with `conn_runtime.db.create_pool(...,
json=True)` jsonb comes back as Python objects; without it, as text) and a keyword-only `schema` (default `conn_read`, env
CONN_READ_SCHEMA). They return plain dicts (JSON-compatible apart from
datetimes/UUIDs) or None when nothing is found.

- get_incident(db, incident_id) -> incident row + `bridge` (holder, current step,
  regions with reading ages, pending/blocked directives, partial changes, hold)
- list_incidents(db, *, open_only=False, limit=100)
- list_ledger(db, incident_id, *, after_sequence=0, limit=100, event_types=None)
- latest_packet(db, incident_id) -> {packet, packet_sha256, markdown, ...} or None
- packet_by_sha256(db, incident_id, packet_sha256) -> the same, for that exact packet
- timeline(db, incident_id) -> post-incident report (conn_readmodel.timeline)
- fleet_report(db, *, since=None, until=None) -> fleet SLIs (conn_core.fleet)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from conn_core import fleet
from conn_readmodel.store import check_schema
from conn_readmodel.timeline import build_timeline
from conn_schemas.codec import decode_raw

DEFAULT_SCHEMA = "conn_read"
Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def get_incident(
    db: Db, incident_id: str, *, schema: str = DEFAULT_SCHEMA
) -> dict[str, Any] | None:
    s = check_schema(schema)
    row = await db.fetchrow(f"SELECT * FROM {s}.incidents WHERE incident_id = $1", incident_id)
    return dict(row) if row else None


async def list_incidents(
    db: Db, *, open_only: bool = False, limit: int = 100, schema: str = DEFAULT_SCHEMA
) -> list[dict[str, Any]]:
    s = check_schema(schema)
    where = "WHERE NOT closed" if open_only else ""
    rows = await db.fetch(
        f"""SELECT incident_id, title, service, opened, closed, opened_at, sequence, head_hash,
            holder, on_hold, hold_reason, open_step, last_verdict, last_event_at
        FROM {s}.incidents {where} ORDER BY last_event_at DESC NULLS LAST LIMIT $1""",
        max(1, min(limit, 1000)),
    )
    return [dict(r) for r in rows]


async def list_ledger(
    db: Db,
    incident_id: str,
    *,
    after_sequence: int = 0,
    limit: int = 100,
    event_types: Sequence[str] | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> list[dict[str, Any]]:
    s = check_schema(schema)
    rows = await db.fetch(
        f"""SELECT incident_id, sequence, event_id, event_type, occurred_at, actor,
            correlation_id, causation_id, prev_hash, hash, raw, kafka_partition, kafka_offset
        FROM {s}.ledger_entries
        WHERE incident_id = $1 AND sequence > $2
          AND ($3::text[] IS NULL OR event_type = ANY($3::text[]))
        ORDER BY sequence LIMIT $4""",
        incident_id,
        after_sequence,
        list(event_types) if event_types else None,
        max(1, min(limit, 1000)),
    )
    return [dict(r) for r in rows]


async def latest_packet(
    db: Db, incident_id: str, *, schema: str = DEFAULT_SCHEMA
) -> dict[str, Any] | None:
    s = check_schema(schema)
    row = await db.fetchrow(
        f"""SELECT * FROM {s}.takeover_packets WHERE incident_id = $1
        ORDER BY ledger_sequence DESC, packet_id DESC LIMIT 1""",
        incident_id,
    )
    return dict(row) if row else None


async def packet_by_sha256(
    db: Db, incident_id: str, packet_sha256: str, *, schema: str = DEFAULT_SCHEMA
) -> dict[str, Any] | None:
    """The incident's latest stored packet with this sha256, or None."""
    s = check_schema(schema)
    row = await db.fetchrow(
        f"""SELECT * FROM {s}.takeover_packets WHERE incident_id = $1 AND packet_sha256 = $2
        ORDER BY ledger_sequence DESC LIMIT 1""",
        incident_id,
        packet_sha256,
    )
    return dict(row) if row else None


async def timeline(
    db: Db, incident_id: str, *, schema: str = DEFAULT_SCHEMA
) -> dict[str, Any] | None:
    s = check_schema(schema)
    rows = await db.fetch(
        f"SELECT raw FROM {s}.ledger_entries WHERE incident_id = $1 ORDER BY sequence",
        incident_id,
    )
    if not rows:
        return None
    return build_timeline([decode_raw(r["raw"]) for r in rows])


async def fleet_events(db: Db, *, schema: str = DEFAULT_SCHEMA) -> list[Any]:
    """Every incident's ledger events, each incident in its ledger order."""
    s = check_schema(schema)
    rows = await db.fetch(f"SELECT raw FROM {s}.ledger_entries ORDER BY incident_id, sequence")
    return [decode_raw(r["raw"]) for r in rows]


async def fleet_report(
    db: Db,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> dict[str, Any]:
    """Fleet SLIs (conn_core.fleet) over the read model's ledger: the same events, in
    the same order, as `conn replay` rebuilds from the topic."""
    events = await fleet_events(db, schema=schema)
    return fleet.fleet_report(events, since=since, until=until)
