"""`conn replay`: verify the ledger from `conn.events` and prove the read model.

Reads `conn.events` from offset 0 (plain aiokafka + the pure projection, no
faust), verifies every record's signature and its signer's entitlement against
the keyring (the same `Trust.open` as every live reader), rebuilds the read model
into a fresh PostgreSQL schema with the SAME projection code as the live
packager, verifies the live ledger's hash chain and every published packet's
hash, and compares the rebuilt schema with the live one row by row. It prints how
many events each principal signed. A forged, unsigned or unentitled record is
never folded (as live) and is reported by position and reason.

Exit codes: 0 everything proven; 1 the chain or the read model differs (the first
differing record is named); 2 replay could not run; 3 chain and read model proven,
but the log holds untrusted records (listed; none was folded).

    python -m conn_readmodel.replay                       # verify + rebuild + compare
    python -m conn_readmodel.replay --export-timeline INC --format md
    python -m conn_readmodel.replay --since 2026-11-22T09:00:00Z   # verify the tail only
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import asyncpg
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from conn_core import fleet
from conn_core.chain import GENESIS, link_raw
from conn_readmodel.projection import BatchRows, IncidentProjection
from conn_readmodel.projector import Projected, Projector, Refused
from conn_readmodel.store import (
    TABLES,
    apply_ddl,
    binary_jsonb,
    check_schema,
    create_pool,
    load_projection,
    set_offsets,
    write_batch,
)
from conn_readmodel.timeline import build_timeline, render_timeline_markdown
from conn_runtime.db import json_codecs
from conn_runtime.partitions import PartitionReader, TopicNotFound
from conn_runtime.settings import DatabaseSettings, KafkaSettings
from conn_runtime.trust import RecordLike, trust_for
from conn_schemas.events import Envelope, Event, TakeoverPacketPublished
from conn_schemas.signing import Trusted

BATCH = 2000
"""Records per rebuild transaction (`project_batch`)."""


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int
    timestamp_type: int


@dataclass
class ReplayResult:
    records: int = 0
    events: int = 0
    unreadable: int = 0
    misplaced: int = 0
    """Records not on their incident's partition: left out, as the live fold does."""
    problems: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)
    """Records refused by their signature or signer: position, reason, detail."""
    signed_by: Counter[str] = field(default_factory=Counter)
    """Principal -> events it signed that were folded."""
    keys_used: dict[str, set[str]] = field(default_factory=dict)
    rebuilt_schema: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.untrusted

    @property
    def first_problem(self) -> str | None:
        return self.problems[0] if self.problems else None

    def count(self, outcome: Trusted | Refused | Projected) -> Event | None:
        """Count one record's outcome (`conn_readmodel.projector`): its event if it was
        trusted and placed, else None (counted and, if forged, listed)."""
        self.records += 1
        if isinstance(outcome, Refused):
            if outcome.kind == "untrusted":
                self.untrusted.append(f"{outcome.where}: {outcome.reason}: {outcome.detail[:300]}")
            elif outcome.kind == "unreadable":
                self.unreadable += 1
            else:
                self.misplaced += 1
            return None
        trusted = outcome.trusted if isinstance(outcome, Projected) else outcome
        self.events += 1
        self.signed_by[trusted.principal] += 1
        self.keys_used.setdefault(trusted.principal, set()).add(trusted.key_id)
        return trusted.event

    def merge(self, other: ReplayResult) -> None:
        """Add the outcome of the records `other` counted after the ones this one did."""
        self.records += other.records
        self.events += other.events
        self.unreadable += other.unreadable
        self.misplaced += other.misplaced
        self.problems += other.problems
        self.untrusted += other.untrusted
        self.signed_by.update(other.signed_by)
        for principal, keys in other.keys_used.items():
            self.keys_used.setdefault(principal, set()).update(keys)


# --- reading the topic -----------------------------------------------------------------


async def read_topic(
    kafka: KafkaSettings, *, since: datetime | None = None, topic: str | None = None
) -> tuple[dict[int, int], dict[int, int], AsyncIterator[Record]]:
    """(start offsets, end offsets, records in per-partition offset order) of
    `conn.events` (or `topic`), read with `conn_runtime.partitions.PartitionReader`."""
    topic = topic or kafka.topics.events
    reader = PartitionReader(kafka, name="conn-replay")
    await reader.start()
    try:
        try:
            begins = await reader.beginning_offsets(topic)
            ends = await reader.end_offsets(topic, begins)
        except TopicNotFound as exc:
            raise RuntimeError(f"topic {topic!r} does not exist") from exc
        starts = dict(begins)
        if since is not None:
            starts = await reader.offsets_for_time(topic, int(since.timestamp() * 1000))
    except BaseException:
        await reader.stop()
        raise

    async def records() -> AsyncIterator[Record]:
        try:
            for partition in sorted(ends):
                async for rec in reader.iter_range(
                    topic, partition, starts[partition], ends[partition]
                ):
                    yield Record(
                        rec.topic,
                        rec.partition,
                        rec.offset,
                        rec.key,
                        rec.value,
                        list(rec.headers or ()),
                        rec.timestamp,
                        rec.timestamp_type,
                    )
        finally:
            await reader.stop()

    return starts, ends, records()


async def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    """Current end offset of every `conn.events` partition."""
    async with PartitionReader(kafka, name="conn-replay") as reader:
        try:
            return await reader.end_offsets(kafka.topics.events)
        except TopicNotFound:
            return {}


# --- rebuild ---------------------------------------------------------------------------

SERIAL_BELOW = 20_000
"""A topic with fewer records than this is rebuilt in this process by default: starting
worker processes (~1 s each) costs more than it saves."""

HELD_FOLDS = 1_000
"""Open incidents whose folds a rebuild keeps in memory (per process); see `HeldFolds`."""


class HeldFolds:
    """Which incidents' folds a rebuild holds in memory: bounded, so memory does not grow
    with the log. After each committed batch, the folds of the incidents it closed are
    let go, and beyond `limit` open incidents the least recently used are let go too. A
    later record of an incident let go is projected from its fold reloaded from the rows
    already written (`store.load_projection`, how the live packager resumes after a
    restart: re-folding the ledger's raw events is exact), so it is projected - or
    refused - exactly as if the fold had stayed in memory."""

    def __init__(self, projector: Projector, limit: int = HELD_FOLDS) -> None:
        self.projector = projector
        self.limit = limit
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.let_go: set[str] = set()
        """Incidents whose fold was let go and is not held now (reloaded on next use)."""
        self.reloads = 0

    def must_reload(self, incident_id: str) -> bool:
        return incident_id in self.let_go and self.projector.needs(incident_id)

    def reloaded(self, incident_id: str) -> None:
        self.let_go.discard(incident_id)
        self.reloads += 1

    def committed(self, touched: Iterable[IncidentProjection]) -> None:
        """The batch that touched these folds is committed: their rows are readable."""
        for proj in touched:
            incident_id = proj.state.incident_id
            if proj.state.closed:
                self._let_go(incident_id)
            else:
                self.recent[incident_id] = None
                self.recent.move_to_end(incident_id)
        while len(self.recent) > self.limit:
            self._let_go(next(iter(self.recent)))

    def _let_go(self, incident_id: str) -> None:
        self.recent.pop(incident_id, None)
        self.projector.projections.pop(incident_id, None)
        self.projector.partition_of.pop(incident_id, None)
        self.let_go.add(incident_id)


@dataclass(frozen=True)
class Shard:
    """Partitions of the events topic rebuilt by one process, each from `start` to `end`."""

    kafka: KafkaSettings
    database_url: str
    schema: str
    partitions: int
    """The topic's partition count (where each incident's records belong)."""
    ranges: tuple[tuple[int, int, int], ...]
    """(partition, start offset, end offset), in partition order."""
    batch: int = BATCH
    held_folds: int = HELD_FOLDS


async def rebuild(
    kafka: KafkaSettings,
    pool: asyncpg.Pool,
    schema: str,
    *,
    progress: bool = False,
    result: ReplayResult | None = None,
    database_url: str | None = None,
    workers: int | None = None,
    batch: int = BATCH,
    held_folds: int = HELD_FOLDS,
) -> ReplayResult:
    """Project the whole topic into `schema` (created fresh). Same code as the live path.

    With `database_url`, the partitions are shared out between `workers` processes
    (default: one per core, when the topic holds at least `SERIAL_BELOW` records): each
    reads, verifies, decodes and projects its partitions in log order and writes their
    rows itself. An incident's records are all on its partition (a record elsewhere is
    refused as misplaced, wherever it is read), so the rows are the same as one process
    projecting every partition in turn. The outcome is merged in partition order, as the
    serial rebuild counts it."""
    result = result or ReplayResult()
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {check_schema(schema)} CASCADE")
    await apply_ddl(pool, schema)
    starts, ends = await topic_offsets(kafka)
    ranges = [(p, starts[p], ends[p]) for p in sorted(ends) if ends[p] > starts[p]]
    total = sum(end - start for _, start, end in ranges)
    count = rebuild_workers(workers, total, len(ranges)) if database_url else 1
    shards = [
        Shard(
            kafka,
            database_url or "",
            schema,
            len(ends),
            tuple(ranges[i::count]),
            batch=batch,
            held_folds=held_folds,
        )
        for i in range(count)
    ]
    bar = _progress(progress)
    task = bar.add_task("replaying conn.events", total=total) if bar else None

    def advance(n: int) -> None:
        if bar and task is not None:
            bar.advance(task, n)

    if bar:
        bar.start()
    try:
        if count == 1:
            async with pool.acquire() as conn:
                try:
                    outcomes = await rebuild_ranges(conn, shards[0], advance)
                finally:
                    if not conn.is_closed():
                        await json_codecs(conn)  # the pool's codecs again
        else:
            outcomes = await _in_processes(shards, pool, schema, starts, advance)
    finally:
        if bar:
            bar.stop()
    for partition in sorted(outcomes):
        result.merge(outcomes[partition])
    result.rebuilt_schema = schema
    return result


def rebuild_workers(workers: int | None, total: int, partitions: int) -> int:
    """How many processes rebuild `total` records on `partitions` partitions."""
    if workers is None:
        workers = 1 if total < SERIAL_BELOW else os.cpu_count() or 1
    return max(1, min(workers, partitions))


async def topic_offsets(kafka: KafkaSettings) -> tuple[dict[int, int], dict[int, int]]:
    """(beginning, end) offsets of every `conn.events` partition."""
    topic = kafka.topics.events
    async with PartitionReader(kafka, name="conn-replay") as reader:
        try:
            begins = await reader.beginning_offsets(topic)
            return begins, await reader.end_offsets(topic, begins)
        except TopicNotFound as exc:
            raise RuntimeError(f"topic {topic!r} does not exist") from exc


async def rebuild_ranges(
    conn: asyncpg.Connection, shard: Shard, advance: Callable[[int], None] = lambda _: None
) -> dict[int, ReplayResult]:
    """Rebuild the shard's partitions, one after the other, each in batches of
    `shard.batch` records (`project_batch`, with COPY: `conn` is switched to
    `binary_jsonb`); the outcome of each partition."""
    topic = shard.kafka.topics.events
    projector = Projector(trust_for(shard.kafka, shared=False), partitions=shard.partitions)
    folds = HeldFolds(projector, shard.held_folds)
    built: dict[tuple[str, int], str] = {}
    """(incident, ledger sequence) -> sha256 of the packet the projection built there."""
    outcomes: dict[int, ReplayResult] = {}
    await binary_jsonb(conn)
    async with PartitionReader(shard.kafka, name="conn-replay") as reader:
        for partition, start, end in shard.ranges:
            result = outcomes[partition] = ReplayResult()
            batch: list[RecordLike] = []
            async for rec in reader.iter_range(topic, partition, start, end):
                batch.append(rec)
                if len(batch) >= shard.batch:
                    await project_batch(
                        conn,
                        shard.schema,
                        topic,
                        projector,
                        batch,
                        result,
                        built,
                        folds=folds,
                        copy=True,
                    )
                    advance(len(batch))
                    batch = []
            await project_batch(
                conn, shard.schema, topic, projector, batch, result, built, folds=folds, copy=True
            )
            advance(len(batch))
    return outcomes


def _rebuild_shard(shard: Shard, send: Connection) -> None:
    """A worker process's part of `rebuild` (its own connection, reader and folds):
    sends back the outcome of each partition, or the error that stopped it."""

    async def run() -> dict[int, ReplayResult]:
        pool = await create_pool(shard.database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await rebuild_ranges(conn, shard)
        finally:
            await pool.close()

    try:
        try:
            outcome: object = asyncio.run(run())
        except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
            outcome = exc
        try:
            send.send(outcome)
        except Exception as exc:  # noqa: BLE001 - e.g. an error that does not pickle
            send.send(RuntimeError(f"rebuild worker failed: {type(exc).__name__}: {exc}"))
    finally:
        send.close()


async def _in_processes(
    shards: Sequence[Shard],
    pool: asyncpg.Pool,
    schema: str,
    starts: dict[int, int],
    advance: Callable[[int], None],
) -> dict[int, ReplayResult]:
    """Run each shard in its own process (spawned: a fresh interpreter, no inherited
    event loop or sockets); progress from the offsets they commit. If one fails or dies,
    the others are stopped and its error is raised."""
    context = multiprocessing.get_context("spawn")
    running: list[tuple[BaseProcess, Connection, Shard]] = []
    outcomes: dict[int, ReplayResult] = {}
    try:
        for shard in shards:
            receive, send = context.Pipe(duplex=False)
            worker: BaseProcess = context.Process(
                target=_rebuild_shard, args=(shard, send), name="conn-replay", daemon=True
            )
            worker.start()
            send.close()
            running.append((worker, receive, shard))
        shown = 0
        while running:
            await asyncio.sleep(0.2)
            for entry in [e for e in running if e[1].poll()]:
                done, receive, shard = entry
                try:
                    outcome = receive.recv()
                except EOFError:
                    done.join()
                    parts = [p for p, _, _ in shard.ranges]
                    raise RuntimeError(
                        f"the rebuild worker for partitions {parts} died (exit code "
                        f"{done.exitcode})"
                    ) from None
                if isinstance(outcome, BaseException):
                    raise outcome
                outcomes.update(outcome)
                done.join()
                running.remove(entry)
            applied = await _applied(pool, schema, starts)
            advance(applied - shown)
            shown = applied
    finally:
        for proc, receive, _ in running:
            proc.terminate()
            proc.join()
            receive.close()
    return outcomes


async def _applied(pool: asyncpg.Pool, schema: str, starts: dict[int, int]) -> int:
    """Records rebuilt so far: the offsets committed with the batches."""
    rows = await pool.fetch(f"SELECT partition, next_offset FROM {schema}.projection_offsets")
    return sum(int(r["next_offset"]) - starts.get(r["partition"], 0) for r in rows)


async def project_batch(
    conn: asyncpg.Connection,
    schema: str,
    topic: str,
    projector: Projector,
    records: Sequence[RecordLike],
    result: ReplayResult,
    built: dict[tuple[str, int], str],
    *,
    folds: HeldFolds | None = None,
    copy: bool = False,
) -> None:
    """Project `records` (in log order, each partition's next ones) into `schema` in ONE
    transaction: their rows (`BatchRows`: one statement per table, each incident's row
    and bridge once) and each partition's `next_offset`. The rebuild's unit of work; the
    live packager writes its batches with the same `write_batch`. With `folds`, a fold
    let go is reloaded from the rows written before it is used, and the folds are
    bounded again once the batch is committed. `copy`: see `write_batch`."""
    rows = BatchRows()
    last: dict[int, int] = {}
    for rec in records:
        last[rec.partition] = rec.offset + 1
        opened = projector.open(rec)
        if not isinstance(opened, Refused) and folds is not None:
            incident = opened.event.incident_id
            if folds.must_reload(incident):
                projector.seed(await load_projection(conn, schema, incident), rec.partition)
                folds.reloaded(incident)
        outcome = opened if isinstance(opened, Refused) else projector.project(rec, opened, rows)
        event = result.count(outcome)
        if isinstance(outcome, Projected) and event is not None:
            if isinstance(event, TakeoverPacketPublished):
                _check_packet(built, event, result)
            if outcome.packet is not None:
                built[(event.incident_id, outcome.sequence)] = outcome.packet.sha256
    if not last:
        return
    async with conn.transaction():
        await write_batch(conn, schema, rows, copy=copy)
        await set_offsets(conn, schema, topic, last)
    if folds is not None:
        folds.committed(rows.touched.values())


def _check_packet(
    built: dict[tuple[str, int], str], event: TakeoverPacketPublished, result: ReplayResult
) -> None:
    p = event.payload
    sha = built.get((event.incident_id, p.ledger_sequence))
    if sha is None:
        result.problems.append(
            f"TakeoverPacketPublished {event.event_id} ({event.incident_id}): no packet is due "
            f"at ledger #{p.ledger_sequence}"
        )
    elif sha != p.packet_sha256:
        result.problems.append(
            f"TakeoverPacketPublished {event.event_id} ({event.incident_id}): packet sha256 "
            f"{p.packet_sha256} != rebuilt {sha} at ledger #{p.ledger_sequence}"
        )


def _progress(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


# --- verification and comparison -----------------------------------------------------------


async def verify_chain(pool: asyncpg.Pool, schema: str) -> list[str]:
    """Each ledger row's hash covers its raw event and the previous row's hash."""
    problems: list[str] = []
    async with pool.acquire() as conn:
        prev: dict[str, tuple[int, str]] = {}
        async for rec in _iterate(
            conn,
            f"SELECT incident_id, sequence, prev_hash, hash, raw FROM {schema}.ledger_entries "
            "ORDER BY incident_id, sequence",
        ):
            inc, seq = rec["incident_id"], rec["sequence"]
            last_seq, last_hash = prev.get(inc, (0, GENESIS))
            where = f"ledger_entries ({inc}, {seq})"
            if seq != last_seq + 1:
                problems.append(f"{where}: sequence gap after #{last_seq}")
            elif rec["prev_hash"] != last_hash:
                problems.append(f"{where}: prev_hash does not match entry #{last_seq}'s hash")
            elif link_raw(rec["prev_hash"], rec["raw"]) != rec["hash"]:
                problems.append(f"{where}: hash does not cover its event (record altered)")
            prev[inc] = (seq, rec["hash"])
            if problems:
                break
    return problems


async def _iterate(conn: asyncpg.Connection, sql: str) -> AsyncIterator[asyncpg.Record]:
    async with conn.transaction():
        async for rec in conn.cursor(sql, prefetch=1000):
            yield rec


def _norm(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


async def compare(pool: asyncpg.Pool, live: str, rebuilt: str) -> list[str]:
    """Row by row, table by table (ordered by key): the first difference, named."""
    for table, key in TABLES.items():
        order = ", ".join(key)
        sql = f"SELECT * FROM {{s}}.{table} ORDER BY {order}"
        async with pool.acquire() as c1, pool.acquire() as c2:
            a = _iterate(c1, sql.format(s=live)).__aiter__()
            b = _iterate(c2, sql.format(s=rebuilt)).__aiter__()
            ra = await anext(a, None)
            rb = await anext(b, None)
            while ra is not None or rb is not None:
                ka = tuple(ra[k] for k in key) if ra is not None else None
                kb = tuple(rb[k] for k in key) if rb is not None else None
                if ra is None or (kb is not None and ka is not None and kb < ka):
                    await _close(a, b)
                    return [f"{table} {kb}: missing from the live read model ({live})"]
                if rb is None or (ka is not None and kb is not None and ka < kb):
                    await _close(a, b)
                    return [f"{table} {ka}: in the live read model but missing from the rebuild"]
                for col, raw_a in ra.items():
                    va, vb = _norm(raw_a), _norm(rb[col])
                    if va != vb:
                        await _close(a, b)
                        return [
                            f"{table} {ka}: column {col} differs: live={str(va)[:200]!r} "
                            f"rebuilt={str(vb)[:200]!r}"
                        ]
                ra = await anext(a, None)
                rb = await anext(b, None)
    return []


async def _close(*gens: Any) -> None:
    for g in gens:
        await g.aclose()


# --- since: verify the tail against the live ledger ------------------------------------------


async def verify_since(
    kafka: KafkaSettings, pool: asyncpg.Pool, live: str, since: datetime, result: ReplayResult
) -> ReplayResult:
    """Re-project records from `since` on, starting from each incident's live prefix,
    and compare each ledger row with the live one."""
    trust = trust_for(kafka)
    _, ends, records = await read_topic(kafka, since=since)
    projector = Projector(trust, partitions=len(ends))
    async with pool.acquire() as conn:
        async for rec in records:
            opened = projector.open(rec)
            event = result.count(opened)
            if isinstance(opened, Refused) or event is None:
                continue
            if projector.needs(event.incident_id):
                proj = await load_projection(
                    conn, live, event.incident_id, before_offset=(rec.partition, rec.offset)
                )
                projector.seed(proj, rec.partition)
            rows = projector.project(rec, opened).rows
            key = (event.incident_id, rows.ledger["sequence"])
            live_row = await conn.fetchrow(
                f"SELECT * FROM {live}.ledger_entries WHERE incident_id=$1 AND sequence=$2", *key
            )
            if live_row is None:
                result.problems.append(f"ledger_entries {key}: missing from the live read model")
                break
            for col, value in rows.ledger.items():
                if _norm(live_row[col]) != _norm(value):
                    result.problems.append(
                        f"ledger_entries {key}: column {col} differs: "
                        f"live={str(_norm(live_row[col]))[:200]!r} rebuilt={str(_norm(value))[:200]!r}"
                    )
                    break
            if result.problems:
                break
    return result


# --- orchestration -----------------------------------------------------------------------------


async def run_replay(
    kafka: KafkaSettings,
    database_url: str,
    *,
    live_schema: str = "conn_read",
    rebuild_schema: str | None = None,
    keep: bool = False,
    since: datetime | None = None,
    progress: bool = False,
) -> ReplayResult:
    live_schema = check_schema(live_schema)
    result = ReplayResult()
    pool = await create_pool(database_url)
    try:
        exists = await pool.fetchval(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name=$1", live_schema
        )
        if not exists:
            result.problems.append(f"live read model schema {live_schema!r} does not exist")
            return result
        result.problems += await verify_chain(pool, live_schema)
        if since is None:
            await verify_control(kafka, result)
        if since is not None:
            await verify_since(kafka, pool, live_schema, since, result)
            return result
        target = check_schema(rebuild_schema or f"{live_schema}_replay_{int(time.time())}"[:63])
        if target == live_schema:
            raise ValueError("the rebuild schema must differ from the live schema")
        try:
            await rebuild(
                kafka,
                pool,
                target,
                progress=progress,
                result=result,
                database_url=database_url,
            )
            result.problems += await compare(pool, live_schema, target)
        finally:
            if not keep:
                async with pool.acquire() as conn:
                    await conn.execute(f"DROP SCHEMA IF EXISTS {target} CASCADE")
        return result
    finally:
        await pool.close()


async def verify_control(kafka: KafkaSettings, result: ReplayResult) -> None:
    """Verify every record of `conn.control` (the kill switch) the same way."""
    projector = Projector(trust_for(kafka))  # the control topic: no incident partitions
    _, _, records = await read_topic(kafka, topic=kafka.topics.control)
    async for rec in records:
        result.count(projector.open(rec))


async def incident_events(kafka: KafkaSettings, incident_id: str) -> list[Envelope]:
    """The incident's trusted events, in log order (forged records and records on a wrong
    partition are left out)."""
    return [e for e in await topic_events(kafka) if e.incident_id == incident_id]


async def topic_events(kafka: KafkaSettings) -> list[Envelope]:
    """Every trusted event of the topic in log order (forged records and records on a
    wrong partition left out): what the live fold and the read model hold."""
    _, ends, records = await read_topic(kafka)
    projector = Projector(trust_for(kafka), partitions=len(ends))
    out: list[Envelope] = []
    async for rec in records:
        opened = projector.open(rec)
        if not isinstance(opened, Refused):
            out.append(opened.event)
    return out


async def export_fleet_report(kafka: KafkaSettings, fmt: str) -> str:
    """The fleet report (conn_core.fleet) recomputed from the topic alone."""
    report = fleet.fleet_report(await topic_events(kafka))
    if fmt == "json":
        return (
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
        )
    return fleet.render_markdown(report)


async def export_timeline(kafka: KafkaSettings, incident_id: str, fmt: str) -> str:
    events = await incident_events(kafka, incident_id)
    if not events:
        raise LookupError(f"no events for incident {incident_id!r} in {kafka.topics.events}")
    report = build_timeline(events)
    if fmt == "json":
        return (
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
        )
    return render_timeline_markdown(report)


# --- CLI -------------------------------------------------------------------------------------------

app = typer.Typer(
    help="Verify conn.events, rebuild the read model from offset 0 and prove it equal.",
    add_completion=False,
    invoke_without_command=True,
)


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"--since {value!r} is not an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.callback()
def replay(
    live_schema: str = typer.Option(None, help="Live read-model schema [env CONN_READ_SCHEMA]"),
    rebuild_schema: str = typer.Option(None, help="Schema to rebuild into (default: fresh)"),
    keep: bool = typer.Option(False, help="Keep the rebuilt schema"),
    since: str = typer.Option(None, help="Only verify records since this ISO time"),
    export_timeline_for: str = typer.Option(
        None, "--export-timeline", help="Print the post-incident timeline of this incident"
    ),
    fleet_report: bool = typer.Option(
        False, "--fleet-report", help="Print the fleet SLI report recomputed from the topic"
    ),
    fmt: str = typer.Option("md", "--format", help="Timeline/report format: md or json"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
) -> None:
    import os

    err = Console(stderr=True)
    try:
        kafka = KafkaSettings()
        database_url = DatabaseSettings().database_url
    except ValueError as exc:  # e.g. development keys without CONN_ENV=development
        err.print(f"conn replay: invalid configuration: {exc}")
        raise typer.Exit(2) from None
    if (fleet_report or export_timeline_for) and fmt not in ("md", "json"):
        raise typer.BadParameter("--format must be md or json")
    try:
        if fleet_report:
            sys.stdout.write(asyncio.run(export_fleet_report(kafka, fmt)))
            return
        if export_timeline_for:
            sys.stdout.write(asyncio.run(export_timeline(kafka, export_timeline_for, fmt)))
            return
        result = asyncio.run(
            run_replay(
                kafka,
                database_url,
                live_schema=live_schema or os.environ.get("CONN_READ_SCHEMA", "conn_read"),
                rebuild_schema=rebuild_schema,
                keep=keep,
                since=_parse_since(since),
                progress=not quiet and sys.stderr.isatty(),
            )
        )
    except typer.BadParameter:
        raise
    except (LookupError, ValueError, RuntimeError, OSError, asyncpg.PostgresError) as exc:
        err.print(f"[red]replay failed:[/red] {exc}")
        raise typer.Exit(2) from None
    summary = (
        f"{result.records} records, {result.events} events, {result.unreadable} unreadable, "
        f"{len(result.untrusted)} untrusted, {result.misplaced} on a wrong partition"
    )
    err.print(signers_table(result))
    if result.untrusted:
        err.print(
            f"[red]UNTRUSTED[/red]: {len(result.untrusted)} record(s) in the log are not signed "
            "by a principal entitled to them; none was folded:"
        )
        for line in result.untrusted[:50]:
            err.print(f"  {line}", markup=False, highlight=False)
        if len(result.untrusted) > 50:
            err.print(f"  ... and {len(result.untrusted) - 50} more")
    if result.ok:
        err.print(f"[green]OK[/green]: {summary}; signatures and chain verified; read model equal")
        return
    if result.problems:
        err.print(f"[red]MISMATCH[/red]: {summary}")
        err.print(f"first differing record: {result.first_problem}", markup=False)
        raise typer.Exit(1)
    err.print(f"[yellow]CHAIN AND READ MODEL VERIFIED[/yellow], but: {summary}")
    raise typer.Exit(3)


def signers_table(result: ReplayResult) -> Table:
    """Per principal: how many events it signed (folded), and with which keys."""
    table = Table(title="Events by signer (verified)", title_justify="left")
    table.add_column("principal")
    table.add_column("events", justify="right")
    table.add_column("key ids")
    for principal, count in sorted(result.signed_by.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(principal, f"{count:,}", ", ".join(sorted(result.keys_used[principal])))
    return table


def main() -> None:
    app()


if __name__ == "__main__":
    main()
