"""The PostgreSQL read model: DDL, its pool, and writing `projection.Rows` (shared by
the live packager and `conn replay`; the pool and DDL helpers are `conn_runtime.db`'s).

Every record's rows and the partition's `projection_offsets.next_offset` are
written in ONE transaction, and a record whose offset is below `next_offset` is
skipped, so a crash never double-applies or skips.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from conn_core.chain import GENESIS
from conn_readmodel.projection import IncidentProjection, Rows
from conn_runtime import db
from conn_schemas.codec import decode_raw

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOCK_KEY = 0x0C0_7ACC  # advisory lock for DDL


class SchemaNameError(ValueError):
    pass


def check_schema(schema: str) -> str:
    if not SCHEMA_RE.match(schema):
        raise SchemaNameError(
            f"read-model schema name {schema!r} must match {SCHEMA_RE.pattern} (lower case)"
        )
    return schema


def ddl(schema: str) -> str:
    s = check_schema(schema)
    return f"""
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.incidents (
    incident_id   text PRIMARY KEY,
    title         text NOT NULL,
    service       text NOT NULL,
    opened        boolean NOT NULL,
    closed        boolean NOT NULL,
    opened_at     timestamptz,
    sequence      integer NOT NULL,
    head_hash     text NOT NULL,
    holder        text,
    on_hold       boolean NOT NULL,
    hold_reason   text,
    open_step     text,
    last_verdict  text,
    last_event_at timestamptz,
    bridge        jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.ledger_entries (
    incident_id     text NOT NULL,
    sequence        integer NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    actor           text NOT NULL,
    correlation_id  text,
    causation_id    text,
    prev_hash       text NOT NULL,
    hash            text NOT NULL,
    raw             jsonb NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    PRIMARY KEY (incident_id, sequence)
);
CREATE INDEX IF NOT EXISTS ledger_entries_type ON {s}.ledger_entries (incident_id, event_type);
CREATE INDEX IF NOT EXISTS ledger_entries_corr ON {s}.ledger_entries (correlation_id);
CREATE TABLE IF NOT EXISTS {s}.verification_snapshots (
    incident_id         text NOT NULL,
    sequence            integer NOT NULL,
    event_id            uuid NOT NULL,
    step_correlation_id text,
    verdict             text NOT NULL,
    detail              text NOT NULL,
    regions             jsonb NOT NULL,
    control_plane       jsonb NOT NULL,
    window_started_at   timestamptz NOT NULL,
    window_ended_at     timestamptz NOT NULL,
    occurred_at         timestamptz NOT NULL,
    PRIMARY KEY (incident_id, sequence)
);
CREATE TABLE IF NOT EXISTS {s}.takeover_packets (
    packet_id          text PRIMARY KEY,
    incident_id        text NOT NULL,
    ledger_sequence    integer NOT NULL,
    ledger_hash        text NOT NULL,
    trigger            text NOT NULL,
    to_team            text,
    packet_sha256      text NOT NULL,
    packet             jsonb NOT NULL,
    markdown           text NOT NULL,
    generated_at       timestamptz NOT NULL,
    published_sequence integer,
    published_event_id uuid
);
CREATE INDEX IF NOT EXISTS takeover_packets_incident
    ON {s}.takeover_packets (incident_id, ledger_sequence);
CREATE TABLE IF NOT EXISTS {s}.projection_offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


TABLES: dict[str, tuple[str, ...]] = {
    "incidents": ("incident_id",),
    "ledger_entries": ("incident_id", "sequence"),
    "verification_snapshots": ("incident_id", "sequence"),
    "takeover_packets": ("packet_id",),
    "projection_offsets": ("topic", "partition"),
}
"""Read-model tables and their keys (what `conn replay` compares row by row)."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    """A pool for the read model (`conn_runtime.db.create_pool` with the JSON codecs)."""
    return await db.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=60, json=True
    )


async def apply_ddl(pool: asyncpg.Pool, schema: str) -> None:
    await db.apply_schema(pool, ddl(schema), lock_key=LOCK_KEY)


def _insert(schema: str, table: str, row: dict[str, Any]) -> tuple[str, list[Any]]:
    cols = list(row)
    placeholders = ", ".join(f"${i + 1}" for i in range(len(cols)))
    return (
        f"INSERT INTO {schema}.{table} ({', '.join(cols)}) VALUES ({placeholders})",
        [row[c] for c in cols],
    )


async def next_offset(
    conn: asyncpg.Connection, schema: str, topic: str, partition: int, *, lock: bool = False
) -> int:
    sql = f"SELECT next_offset FROM {schema}.projection_offsets WHERE topic=$1 AND partition=$2"
    value = await conn.fetchval(sql + (" FOR UPDATE" if lock else ""), topic, partition)
    return int(value) if value is not None else 0


async def set_offset(
    conn: asyncpg.Connection, schema: str, topic: str, partition: int, offset: int
) -> None:
    await conn.execute(
        f"""INSERT INTO {schema}.projection_offsets (topic, partition, next_offset)
        VALUES ($1, $2, $3) ON CONFLICT (topic, partition)
        DO UPDATE SET next_offset = EXCLUDED.next_offset""",
        topic,
        partition,
        offset,
    )


async def write_rows(conn: asyncpg.Connection, schema: str, rows: Rows) -> None:
    """Write one event's rows (inside the caller's transaction)."""
    sql, args = _insert(schema, "ledger_entries", rows.ledger)
    await conn.execute(sql, *args)
    inc = rows.incident
    cols = list(inc)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "incident_id")
    sql, args = _insert(schema, "incidents", inc)
    await conn.execute(sql + f" ON CONFLICT (incident_id) DO UPDATE SET {sets}", *args)
    if rows.snapshot is not None:
        sql, args = _insert(schema, "verification_snapshots", rows.snapshot)
        await conn.execute(sql, *args)
    if rows.packet is not None:
        p = rows.packet.packet
        sql, args = _insert(
            schema,
            "takeover_packets",
            {
                "packet_id": p.packet_id,
                "incident_id": p.incident_id,
                "ledger_sequence": p.ledger_head.sequence,
                "ledger_hash": p.ledger_head.hash,
                "trigger": p.trigger,
                "to_team": p.to_team,
                "packet_sha256": rows.packet.sha256,
                "packet": p.model_dump(mode="json"),
                "markdown": rows.packet.markdown,
                "generated_at": p.generated_at,
            },
        )
        await conn.execute(sql + " ON CONFLICT (packet_id) DO NOTHING", *args)
    if rows.published is not None:
        pub = rows.published
        await conn.execute(
            f"""UPDATE {schema}.takeover_packets
            SET published_sequence = $4, published_event_id = $5
            WHERE incident_id = $1 AND ledger_sequence = $2 AND packet_sha256 = $3
              AND published_sequence IS NULL""",
            pub["incident_id"],
            pub["ledger_sequence"],
            pub["packet_sha256"],
            pub["published_sequence"],
            pub["published_event_id"],
        )


async def load_projection(
    conn: asyncpg.Connection | asyncpg.Pool,
    schema: str,
    incident_id: str,
    *,
    before_offset: tuple[int, int] | None = None,
) -> IncidentProjection:
    """Rebuild an incident's fold and ledger head from its ledger rows (the read
    model is written from the log, so re-folding its raw events is exact).
    `before_offset=(partition, offset)` stops at records before that position."""
    sql = f"SELECT raw, hash, kafka_partition, kafka_offset FROM {schema}.ledger_entries WHERE incident_id = $1 ORDER BY sequence"
    proj = IncidentProjection.new(incident_id)
    head = GENESIS
    for rec in await conn.fetch(sql, incident_id):
        if before_offset is not None and (rec["kafka_partition"], rec["kafka_offset"]) >= (
            before_offset
        ):
            break
        # Rows were written from decoded events; an unreadable one raises UnreadableRecord.
        proj.advance(decode_raw(rec["raw"]))
        head = rec["hash"]
    proj.head = head
    return proj


async def unpublished_packets(
    conn: asyncpg.Connection | asyncpg.Pool, schema: str
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"""SELECT packet_id, incident_id, ledger_sequence, ledger_hash, trigger, to_team,
                packet_sha256, packet
            FROM {schema}.takeover_packets WHERE published_sequence IS NULL
            ORDER BY incident_id, ledger_sequence"""
        )
    )
