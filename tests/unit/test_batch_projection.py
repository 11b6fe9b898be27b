"""Batched projection (conn_readmodel.projection.BatchRows), without I/O: projecting a
log in batches with arbitrary boundaries leaves the same read-model tables as projecting
it event by event.

The oracle is the per-event path as it was before batching (`projection.project`: each
event writes its ledger entry, snapshot, packet, the packet it marks published, and its
incident's row, which replaces the previous one). The tables are modelled in memory with
the statements' semantics (insert; upsert on the incident; insert-or-nothing on the
packet id; mark published only an unpublished packet); `store.write_batch`'s SQL is
checked against real PostgreSQL by tests/packager/test_batched_projection_pg.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readmodel_histories import (
    PARTITIONS,
    bench_incidents,
    chunks,
    histories,
    incident_items,
    trust,
)
from readmodel_histories import records as recs

from conn_readmodel.projection import BatchRows, EventRows, PacketDue, Rows
from conn_readmodel.projector import Projected, Projector, Refused
from conn_readmodel.store import packet_row


@dataclass
class Tables:
    ledger: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshots: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    packets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def event(self, rows: EventRows) -> None:
        key = (rows.ledger["incident_id"], rows.ledger["sequence"])
        assert key not in self.ledger, "an entry written twice"
        self.ledger[key] = rows.ledger
        if rows.snapshot is not None:
            self.snapshots[key] = rows.snapshot
        if rows.packet is not None:
            self.packet(rows.packet)

    def packet(self, due: PacketDue) -> None:
        row = packet_row(due)
        if row["packet_id"] not in self.packets:
            self.packets[row["packet_id"]] = {
                **row,
                "published_sequence": None,
                "published_event_id": None,
            }

    def publish(self, pub: dict[str, Any], *, at_or_after: bool) -> None:
        for row in self.packets.values():
            if (
                row["incident_id"] == pub["incident_id"]
                and row["ledger_sequence"] == pub["ledger_sequence"]
                and row["packet_sha256"] == pub["packet_sha256"]
                and (not at_or_after or row["ledger_sequence"] <= pub["published_sequence"])
                and row["published_sequence"] is None
            ):
                row["published_sequence"] = pub["published_sequence"]
                row["published_event_id"] = pub["published_event_id"]

    def per_event(self, rows: Rows) -> None:
        """The old path: every row of one event, in order."""
        self.event(rows)
        self.incidents[rows.incident["incident_id"]] = rows.incident
        if rows.published is not None:
            self.publish(rows.published, at_or_after=False)

    def batch(self, batch: BatchRows) -> None:
        """store.write_batch's statements, in its order."""
        for ledger in batch.ledger:
            key = (ledger["incident_id"], ledger["sequence"])
            assert key not in self.ledger, "an entry written twice"
            self.ledger[key] = ledger
        for row in batch.incidents():
            self.incidents[row["incident_id"]] = row
        for snap in batch.snapshots:
            self.snapshots[(snap["incident_id"], snap["sequence"])] = snap
        for due in batch.packets:
            self.packet(due)
        for pub in batch.published:
            self.publish(pub, at_or_after=True)


def per_event(records: list[Any]) -> tuple[Tables, int]:
    """The log projected event by event with the old `project` (incident row per event)."""
    from conn_readmodel.projection import IncidentProjection, Where, project

    tables = Tables()
    projector = Projector(trust(), partitions=PARTITIONS)
    folds: dict[str, IncidentProjection] = {}
    folded = 0
    for rec in records:
        opened = projector.open(rec)
        if isinstance(opened, Refused):
            continue
        inc = opened.event.incident_id
        proj = folds.setdefault(inc, IncidentProjection.new(inc))
        tables.per_event(project(proj, opened.event, Where(rec.topic, rec.partition, rec.offset)))
        folded += 1
    return tables, folded


def batched(records: list[Any], cuts: list[int]) -> Tables:
    tables = Tables()
    projector = Projector(trust(), partitions=PARTITIONS)
    for chunk in chunks(records, cuts):
        batch = BatchRows()
        for rec in chunk:
            outcome = projector.apply(rec, batch)
            assert isinstance(outcome, Projected | Refused)
        tables.batch(batch)
    return tables


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.lists(st.integers(0, 400), max_size=30))
def test_batches_with_any_boundaries_write_the_tables_event_by_event_writes(
    records: list[Any], cuts: list[int]
) -> None:
    expected, folded = per_event(records)
    assert len(expected.ledger) == folded
    assert batched(records, cuts) == expected


def test_the_bench_history_batched_equals_event_by_event() -> None:
    records = bench_incidents(3)
    expected, folded = per_event(records)
    assert folded == len(records) and expected.packets, "the bench history makes a packet due"
    for cuts in ([], [1], list(range(0, len(records), 7)), list(range(len(records)))):
        assert batched(records, cuts) == expected


def test_a_packet_published_in_the_batch_that_made_it_due_is_marked_published() -> None:
    """The packet row and the TakeoverPacketPublished naming it in one batch: the insert
    comes before the update (as when each event is written in order); a publication
    naming no packet marks nothing."""
    items = incident_items("inc-pub", ["hold", "publish", "publish_unknown", "handoff"])
    records = recs([items], [0] * len(items))
    expected, _ = per_event(records)
    published = [r for r in expected.packets.values() if r["published_sequence"] is not None]
    assert len(published) == 1 and len(expected.packets) == 2
    assert batched(records, []) == expected
