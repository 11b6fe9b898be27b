"""The packager's record handler, independent of the stream framework driving it.

`Packager.handle_many(records)` projects the `conn.events` records in hand into
PostgreSQL, each partition's as one batch (rows + `projection_offsets` in one
transaction, one statement per table, each incident's row and bridge built once;
records below `next_offset` are skipped),
then publishes a takeover packet if the projection made one due. Every record is
decoded and verified first (`conn_runtime.trust.Trust.open`): an unreadable or
untrusted record takes no ledger position, changes no row, and is dead-lettered
with its reason once the transaction that moved past it has committed. After a restart, packets committed to the read model
but never published (crash between the commit and the publish) are published
once the partition has been re-read up to where it ended at start-up, and only
if still the incident's latest packet.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from conn_packager import metrics
from conn_readmodel.packet import render_markdown
from conn_readmodel.projection import PacketDue
from conn_readmodel.projector import Projected, Projector, Refused
from conn_readmodel.store import (
    apply_ddl,
    create_pool,
    next_offset,
    project_records,
    set_offset,
    unpublished_packets,
)
from conn_runtime import metrics as runtime_metrics
from conn_runtime.kafka import EventProducer
from conn_runtime.partitioning import WRONG_PARTITION
from conn_runtime.partitions import PartitionReader
from conn_runtime.resilience import dependency_of
from conn_runtime.settings import KafkaSettings
from conn_runtime.trust import RecordLike, trust_for
from conn_schemas.events import (
    TakeoverPacketPublished,
    TakeoverPacketPublishedPayload,
    new_event,
)
from conn_schemas.packet import TakeoverPacket
from conn_schemas.signing import SignerRole
from conn_schemas.values import Actor

log = logging.getLogger(__name__)

PRODUCER = "packager"

Position = tuple[str, int, int]
"""(topic, partition, offset) of a record."""


def _position(record: RecordLike) -> Position:
    return (record.topic, record.partition, record.offset)


@dataclass(frozen=True)
class Handled:
    incident_id: str
    sequence: int
    head: str
    bridge: dict[str, Any]


class Packager:
    def __init__(self, kafka: KafkaSettings, database_url: str, schema: str) -> None:
        self.kafka = kafka
        self.topics = kafka.topics
        self.trust = trust_for(kafka)
        self.database_url = database_url
        self.schema = schema
        self.pool: asyncpg.Pool | None = None
        self._producer: EventProducer | None = None
        self.projector = Projector(self.trust)
        """The folds of the incidents this instance projects (`conn_readmodel.projector`)."""
        self._reader: PartitionReader | None = None
        self.next: dict[int, int] = {}
        self.startup_end: dict[int, int] = {}
        self.published: set[str] = set()
        self.lock = asyncio.Lock()
        self._started = False
        self._schema_ready = False
        self._start_lock = asyncio.Lock()
        self._stalled: dict[int, int] = {}
        """partition -> next_offset seen behind the end at the previous catch_up()."""

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            # Each step once; safe to call again after a step failed (dependency away).
            if self.pool is None:
                # No reset query on release: nothing here leaves session state behind
                # (no SET, LISTEN, cursor or session-level advisory lock; the DDL lock
                # is transaction-level), so the reset was a round trip per batch.
                self.pool = await create_pool(self.database_url, reset_session=False)
            if not self._schema_ready:
                await apply_ddl(self.pool, self.schema)
                self._schema_ready = True
            if self._producer is None:
                self._producer = EventProducer(
                    self.kafka, producer_name=PRODUCER, expect_role=SignerRole.PACKAGER
                )
            await self._producer.start()
            self._started = True
            log.info("packager started", extra={"schema": self.schema})

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        if self._started:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        self._started = self._schema_ready = False
        self._producer = None

    @property
    def partitions(self) -> int | None:
        """Partition count of conn.events (one incident, one partition), once known."""
        return self.projector.partitions

    @partitions.setter
    def partitions(self, count: int | None) -> None:
        self.projector.partitions = count

    @property
    def started(self) -> bool:
        return self._started

    @property
    def producer(self) -> EventProducer:
        assert self._producer is not None, "Packager.start() first"
        return self._producer

    async def ready(self) -> bool:
        if self.pool is None:
            return False
        async with self.pool.acquire(timeout=1.5) as conn:
            return bool(await conn.fetchval("SELECT 1"))

    def set_startup_end(self, ends: dict[int, int]) -> None:
        self.startup_end = dict(ends)

    # -- projection ----------------------------------------------------------------------

    def _forget_partition(self, partition: int) -> None:
        self.projector.forget_partition(partition)
        self.next.pop(partition, None)

    async def handle(self, record: RecordLike) -> Handled | None:
        """Project one record (`handle_many` of one). Returns the incident's new head, or
        None if the record was already applied or refused."""
        return (await self.handle_many([record])).get(_position(record))

    async def handle_many(self, records: Sequence[RecordLike]) -> dict[Position, Handled]:
        """Project the records in hand (in delivery order, any partitions): each
        partition's in ONE transaction (`_advance`). Returns, per projected record
        (topic, partition, offset), its incident's new head.

        Records between the read model's `next_offset` and a record's offset (the
        stream's committed offset ran ahead of what was projected, e.g. after a SIGKILL)
        are read back from Kafka and projected first, in order: never skipped."""
        await self.start()
        by_partition: dict[tuple[str, int], list[RecordLike]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        handled: dict[Position, Handled] = {}
        for (topic, partition), recs in by_partition.items():
            recs.sort(key=lambda r: r.offset)
            done = await self._advance(topic, partition, recs[-1].offset + 1, tail=recs)
            if isinstance(done, int):
                metrics.RECORDS_SKIPPED.labels(reason="already_applied").inc(len(recs))
                self.next[partition] = done
                continue
            outcomes, bridges = done
            for outcome in outcomes:
                if isinstance(outcome, Refused):
                    continue
                metrics.EVENTS_PROJECTED.labels(event_type=outcome.event.event_type).inc()
                handled[_position(outcome.record)] = Handled(
                    outcome.incident_id,
                    outcome.sequence,
                    outcome.head,
                    bridges[outcome.incident_id],
                )
        return handled

    async def _advance(
        self, topic: str, partition: int, end: int, *, tail: Sequence[RecordLike] = ()
    ) -> tuple[list[Projected | Refused], dict[str, dict[str, Any]]] | int:
        """Project the partition's records [next_offset, end) and move `next_offset` to
        `end`, in ONE transaction (under `self.lock` and the offset row's lock): `tail`
        (the records in hand, ascending, the last at end - 1) and the records before or
        between them that are not in hand, read back from Kafka. Their rows are written as
        one batch (`write_batch`: one statement per table, each incident's row and bridge
        built once). Then dead-letter the refused ones and publish the packets made due.
        Returns the outcomes in offset order and each incident's bridge as the batch
        leaves it, or `next_offset` if it is already >= end."""
        assert self.pool is not None
        async with self.lock:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    nxt = await next_offset(conn, self.schema, topic, partition, lock=True)
                    if nxt >= end:
                        return nxt
                    if self.next.get(partition) != nxt:
                        # First sight of the partition, or someone else advanced it.
                        self._forget_partition(partition)
                    records = await self._with_gaps(topic, partition, nxt, end, tail)
                    outcomes, written = await project_records(
                        conn, self.schema, self.projector, records
                    )
                    bridges = {row["incident_id"]: row["bridge"] for row in written}
                    await set_offset(conn, self.schema, topic, partition, end)
            except BaseException:
                # The in-memory fold may be ahead of what was committed: rebuild it.
                self._forget_partition(partition)
                raise
            self.next[partition] = end
            refused = [o for o in outcomes if isinstance(o, Refused)]
            for r in refused:
                self._refused(r)
            await self._dead_letter(refused)
            await self._publish_committed(
                [o.packet for o in outcomes if isinstance(o, Projected) and o.packet is not None]
            )
            return outcomes, bridges

    async def _with_gaps(
        self, topic: str, partition: int, start: int, end: int, tail: Sequence[RecordLike]
    ) -> list[RecordLike]:
        """[start, end) of the partition: the records in hand at or after `start`, and the
        ones before, between or after them read back from Kafka (a record the stream
        skipped is never skipped here)."""
        out: list[RecordLike] = []
        expected = start
        for rec in tail:
            if rec.offset < expected:
                continue  # already applied
            if expected < rec.offset:
                read = await self._read_range(topic, partition, expected, rec.offset)
                metrics.OFFSET_GAPS.inc()
                log.warning(
                    "offset gap: projecting the records the stream skipped",
                    extra={
                        "partition": partition,
                        "expected": expected,
                        "got": rec.offset,
                        "read_back": len(read),
                    },
                )
                out.extend(read)
            out.append(rec)
            expected = rec.offset + 1
        if expected < end:
            out.extend(await self._read_range(topic, partition, expected, end))
        return out

    async def _publish_committed(self, dues: list[PacketDue]) -> None:
        """Publish packets whose rows are committed. If Kafka is away, they stay
        unpublished in the read model and `publish_pending` publishes them once it is
        back (the record itself is done: it is not projected again)."""
        for due in dues:
            try:
                await self._publish(due, path="live")
            except Exception as exc:
                if dependency_of(exc) is None:
                    raise
                log.warning(
                    "packet not published yet (dependency away); will be published later",
                    extra={"packet_id": due.packet.packet_id, "error": repr(exc)[:300]},
                )

    async def catch_up(self, topic: str, ends: Mapping[int, int | None]) -> int:
        """Project records the stream never delivered: for each partition whose read
        model stayed behind its end offset since the previous call (no progress),
        read [next_offset, end) back from Kafka and project it. Safe alongside the
        stream: both take `self.lock` and the row lock, and skip applied offsets."""
        await self.start()
        assert self.pool is not None
        done = 0
        for partition, end in ends.items():
            if end is None:
                continue
            async with self.pool.acquire() as conn:
                nxt = await next_offset(conn, self.schema, topic, partition)
            if nxt >= end:
                self._stalled.pop(partition, None)
                continue
            if self._stalled.get(partition) != nxt:
                self._stalled[partition] = nxt  # behind; act only if still here next time
                continue
            done += await self._catch_up_partition(topic, partition, end)
            self._stalled.pop(partition, None)
        return done

    async def _catch_up_partition(self, topic: str, partition: int, end: int) -> int:
        done = await self._advance(topic, partition, end)
        if isinstance(done, int):
            return 0
        metrics.OFFSET_GAPS.inc()
        log.warning(
            "stream stalled behind the log: projected the records it never delivered",
            extra={"partition": partition, "to": end, "records": len(done[0])},
        )
        return len(done[0])

    def _refused(self, refused: Refused) -> None:
        if refused.kind == "misplaced":
            # Not in the incident's order: left out exactly as every other reader does.
            log.warning(
                "record on the wrong partition skipped",
                extra={"reason": refused.detail, "where": refused.where},
            )
            metrics.RECORDS_SKIPPED.labels(reason=WRONG_PARTITION).inc()
            return
        untrusted = refused.kind == "untrusted"
        log.warning(
            "untrusted record refused" if untrusted else "unreadable record skipped",
            extra={
                "reason": refused.reason,
                "detail": refused.detail[:300],
                "where": refused.where,
            },
        )
        metrics.RECORDS_SKIPPED.labels(reason=refused.kind).inc()
        if untrusted:
            runtime_metrics.RECORDS_UNTRUSTED.labels(consumer=PRODUCER, reason=refused.reason).inc()

    async def _dead_letter(self, rejected: list[Refused]) -> None:
        """After the commit that moved past them: a crash before this re-reads and
        re-refuses them (at least once), it never folds them."""
        for r in rejected:
            await self.producer.dead_letter(r.record, r.reason, r.detail, PRODUCER)

    async def _read_range(
        self, topic: str, partition: int, start: int, end: int
    ) -> list[RecordLike]:
        """Records [start, end) of one partition, read directly (outside the group)."""
        if self._reader is None:
            self._reader = PartitionReader(self.kafka, name=f"{PRODUCER}-readback")
        await self._reader.start()
        return list(await self._reader.read_range(topic, partition, start, end))

    # -- packets -------------------------------------------------------------------------

    async def _publish(self, due: PacketDue, *, path: str) -> None:
        packet = due.packet
        if packet.packet_id in self.published:
            return
        self.published.add(packet.packet_id)
        try:
            await self._send_packet(due, path=path)
        except BaseException:
            self.published.discard(packet.packet_id)  # publish_pending tries again
            raise

    async def _send_packet(self, due: PacketDue, *, path: str) -> None:
        packet = due.packet
        body = {
            "packet_sha256": due.sha256,
            "packet": packet.model_dump(mode="json"),
            "markdown": due.markdown,
        }
        await self.producer.publish(
            self.topics.takeover,
            packet.incident_id.encode(),
            orjson.dumps(body),
            [("packet_sha256", due.sha256.encode()), ("trigger", packet.trigger.encode())],
        )
        event = new_event(
            TakeoverPacketPublished,
            incident_id=packet.incident_id,
            payload=TakeoverPacketPublishedPayload(
                packet_id=packet.packet_id,
                packet_sha256=due.sha256,
                to_team=packet.to_team,
                trigger=packet.trigger,
                ledger_sequence=packet.ledger_head.sequence,
                ledger_hash=packet.ledger_head.hash,
            ),
            actor=Actor.service(self.producer.principal),
            producer=self.producer.principal,
            correlation_id=packet.hold.correlation_id if packet.hold else None,
        )
        await self.producer.append(event)
        metrics.PACKETS_PUBLISHED.labels(trigger=packet.trigger, path=path).inc()
        log.info(
            "takeover packet published",
            extra={
                "incident_id": packet.incident_id,
                "packet_id": packet.packet_id,
                "trigger": packet.trigger,
                "to_team": packet.to_team,
                "sha256": due.sha256,
                "ledger_sequence": packet.ledger_head.sequence,
            },
        )

    def caught_up(self, partition: int) -> bool:
        end = self.startup_end.get(partition)
        return end is not None and self.next.get(partition, -1) >= end

    async def publish_pending(self, assigned: set[int]) -> int:
        """Publish packets committed to the read model but never published (a crash
        between commit and publish), once their partition has been re-read up to
        its end at start-up (so a TakeoverPacketPublished of a previous run would
        have been seen). Only an incident's latest packet is published."""
        await self.start()
        assert self.pool is not None
        count = 0
        async with self.lock:
            rows = await unpublished_packets(self.pool, self.schema)
            if not rows:
                return 0
            latest: dict[str, int] = {}
            async with self.pool.acquire() as conn:
                for rec in await conn.fetch(
                    f"SELECT incident_id, max(ledger_sequence) AS s FROM {self.schema}.takeover_packets GROUP BY incident_id"
                ):
                    latest[rec["incident_id"]] = rec["s"]
                for rec in rows:
                    if rec["packet_id"] in self.published:
                        continue
                    if rec["ledger_sequence"] != latest.get(rec["incident_id"]):
                        continue  # superseded by a newer packet
                    part = await conn.fetchval(
                        f"SELECT kafka_partition FROM {self.schema}.ledger_entries WHERE incident_id=$1 AND sequence=$2",
                        rec["incident_id"],
                        rec["ledger_sequence"],
                    )
                    if part is None or part not in assigned or not self.caught_up(part):
                        continue
                    packet = TakeoverPacket.model_validate(rec["packet"])
                    sha = rec["packet_sha256"]
                    due = PacketDue(packet, sha, render_markdown(packet, sha))
                    await self._publish(due, path="recovered")
                    count += 1
        return count


def new_instance_id() -> str:
    return uuid.uuid4().hex[:8]
