"""The PostgreSQL read model: DDL, its pool, and writing `projection.Rows` (shared by
the live packager and `conn replay`; the pool and DDL helpers are `conn_runtime.db`'s).

A batch of records' rows (`projection.BatchRows`, one statement per table) and the
partition's `projection_offsets.next_offset` are written in ONE transaction, and a
record whose offset is below `next_offset` is skipped, so a crash never double-applies
or skips.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from conn_core.chain import GENESIS
from conn_readmodel.projection import BatchRows, IncidentProjection, PacketDue
from conn_readmodel.projector import Projected, Projector, Refused
from conn_runtime import db
from conn_runtime.trust import RecordLike
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


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 5, reset_session: bool = True
) -> asyncpg.Pool:
    """A pool for the read model (`conn_runtime.db.create_pool` with the JSON codecs;
    `reset_session` as there)."""
    return await db.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=60,
        json=True,
        reset_session=reset_session,
    )


async def apply_ddl(pool: asyncpg.Pool, schema: str) -> None:
    await db.apply_schema(pool, ddl(schema), lock_key=LOCK_KEY)


def _insert_sql(schema: str, table: str, cols: list[str]) -> str:
    placeholders = ", ".join(f"${i + 1}" for i in range(len(cols)))
    return f"INSERT INTO {schema}.{table} ({', '.join(cols)}) VALUES ({placeholders})"


async def _insert_many(
    conn: asyncpg.Connection, schema: str, table: str, rows: list[dict[str, Any]], suffix: str = ""
) -> None:
    """One statement for all `rows` (same keys), pipelined by asyncpg's executemany."""
    if not rows:
        return
    cols = list(rows[0])
    await conn.executemany(
        _insert_sql(schema, table, cols) + suffix, [[row[c] for c in cols] for row in rows]
    )


def _jsonb_send(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _jsonb_recv(data: bytes) -> Any:
    if data[:1] != b"\x01":
        raise ValueError(f"unknown jsonb binary format version {data[:1]!r}")
    return orjson.loads(data[1:])


async def binary_jsonb(conn: asyncpg.Connection) -> None:
    """jsonb in PostgreSQL's binary format on this connection (the same Python values as
    `create_pool`'s text codec: version byte 1, then the JSON text), so rows can be
    written with COPY (`write_batch(copy=True)`), which asyncpg does in binary only."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_jsonb_send, decoder=_jsonb_recv, format="binary"
    )


async def _copy_many(
    conn: asyncpg.Connection, schema: str, table: str, rows: list[dict[str, Any]]
) -> None:
    """`_insert_many` with COPY (binary): the same rows, for a table without conflicts to
    handle (a duplicate key fails the COPY as it fails the INSERT)."""
    if not rows:
        return
    cols = list(rows[0])
    await conn.copy_records_to_table(
        table, schema_name=schema, columns=cols, records=[[row[c] for c in cols] for row in rows]
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


async def set_offsets(
    conn: asyncpg.Connection, schema: str, topic: str, offsets: dict[int, int]
) -> None:
    """`set_offset` for several partitions, in one statement."""
    await conn.executemany(
        f"""INSERT INTO {schema}.projection_offsets (topic, partition, next_offset)
        VALUES ($1, $2, $3) ON CONFLICT (topic, partition)
        DO UPDATE SET next_offset = EXCLUDED.next_offset""",
        [(topic, partition, offset) for partition, offset in sorted(offsets.items())],
    )


def packet_row(due: PacketDue) -> dict[str, Any]:
    p = due.packet
    return {
        "packet_id": p.packet_id,
        "incident_id": p.incident_id,
        "ledger_sequence": p.ledger_head.sequence,
        "ledger_hash": p.ledger_head.hash,
        "trigger": p.trigger,
        "to_team": p.to_team,
        "packet_sha256": due.sha256,
        "packet": p.model_dump(mode="json"),
        "markdown": due.markdown,
        "generated_at": p.generated_at,
    }


async def write_batch(
    conn: asyncpg.Connection, schema: str, batch: BatchRows, *, copy: bool = False
) -> list[dict[str, Any]]:
    """Write a batch's rows (inside the caller's transaction) and return the incident rows
    written: one statement per table, each touched incident's row once (`BatchRows`).
    The same tables as writing the batch event by event: ledger entries, snapshots and
    packets are keyed per event; an incident's row is the last one written; a packet is
    marked published by the first TakeoverPacketPublished naming it at or after its
    ledger position, as it is when each event is written in order (the packet row exists
    from its own position on). `copy=True` (the connection has `binary_jsonb`): ledger
    entries and snapshots, plain inserts, are written with COPY."""
    append = _copy_many if copy else _insert_many
    await append(conn, schema, "ledger_entries", batch.ledger)
    incidents = batch.incidents()
    if incidents:
        cols = [c for c in incidents[0] if c != "incident_id"]
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
        await _insert_many(
            conn,
            schema,
            "incidents",
            incidents,
            f" ON CONFLICT (incident_id) DO UPDATE SET {sets}",
        )
    await append(conn, schema, "verification_snapshots", batch.snapshots)
    await _insert_many(
        conn,
        schema,
        "takeover_packets",
        [packet_row(due) for due in batch.packets],
        " ON CONFLICT (packet_id) DO NOTHING",
    )
    if batch.published:
        await conn.executemany(
            f"""UPDATE {schema}.takeover_packets
            SET published_sequence = $4, published_event_id = $5
            WHERE incident_id = $1 AND ledger_sequence = $2 AND packet_sha256 = $3
              AND ledger_sequence <= $4 AND published_sequence IS NULL""",
            [
                (
                    pub["incident_id"],
                    pub["ledger_sequence"],
                    pub["packet_sha256"],
                    pub["published_sequence"],
                    pub["published_event_id"],
                )
                for pub in batch.published
            ],
        )
    return incidents


async def project_records(
    conn: asyncpg.Connection, schema: str, projector: Projector, records: Sequence[RecordLike]
) -> tuple[list[Projected | Refused], list[dict[str, Any]]]:
    """Project `records` (log order) into `schema` as ONE batch, inside the caller's
    transaction: an incident whose fold the projector does not hold is seeded first from
    its rows already written (`load_projection`: the live packager after a restart or a
    rebalance). Returns each record's outcome and the incident rows written. A refused
    record (unreadable, untrusted, misplaced) writes nothing and the others proceed."""
    batch = BatchRows()
    outcomes: list[Projected | Refused] = []
    for record in records:
        opened = projector.open(record)
        if isinstance(opened, Refused):
            outcomes.append(opened)
            continue
        incident = opened.event.incident_id
        if projector.needs(incident):
            projector.seed(await load_projection(conn, schema, incident), record.partition)
        outcomes.append(projector.project(record, opened, batch))
    return outcomes, await write_batch(conn, schema, batch)


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
