"""The projector: consumed records -> read-model rows, or a refusal. No I/O.

One projector serves the live packager (driven by faust, writing each batch of records'
rows in one transaction) and `conn replay` (driven by a plain partition read, rebuilding a
fresh schema): both open, place and project a record with the same code, so the rebuilt
read model can be proven equal to the live one.

For each record, in order:
1. `Trust.open`: decode and verify the signature and the signer's entitlement; an
   unreadable or untrusted record is refused (`Refused`, kind "unreadable"/"untrusted");
2. placement (`conn_runtime.partitioning.misplaced`, when the partition count is known):
   a record not on its incident's partition is refused (kind "misplaced"), as every other
   reader leaves it out of the incident's order;
3. `projection.project`: the incident's fold and hash chain advance and the rows (and a
   takeover packet, if one is due) come out (`Projected`).

The incident's fold so far is kept per incident. A caller that starts mid-log (the live
packager after a restart) seeds it first from what it already wrote (`needs` / `seed`);
a caller reading from offset 0 (replay) starts every incident fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from conn_readmodel.projection import (
    BatchRows,
    EventRows,
    IncidentProjection,
    PacketDue,
    Where,
    incident_row,
    project_event,
)
from conn_runtime.partitioning import WRONG_PARTITION, misplaced
from conn_runtime.trust import RecordLike, Trust
from conn_schemas.codec import UnreadableRecord
from conn_schemas.events import Envelope
from conn_schemas.signing import Trusted, UntrustedRecord

RefusalKind = Literal["unreadable", "untrusted", "misplaced"]


@dataclass(frozen=True)
class Refused:
    """A record left out of every incident's order: dead-letter it (live) or count it
    (replay)."""

    record: RecordLike
    kind: RefusalKind
    reason: str
    detail: str

    @property
    def where(self) -> str:
        return f"{self.record.topic}/{self.record.partition}@{self.record.offset}"


@dataclass(frozen=True)
class Projected:
    """A record folded into its incident: the rows only it writes (its incident's row is
    written once per batch: `BatchRows`) and the new ledger head."""

    record: RecordLike
    trusted: Trusted
    rows: EventRows

    @property
    def event(self) -> Envelope:
        return self.trusted.event

    @property
    def incident_id(self) -> str:
        return self.trusted.event.incident_id

    @property
    def sequence(self) -> int:
        return self.rows.sequence

    @property
    def head(self) -> str:
        return self.rows.head

    @property
    def packet(self) -> PacketDue | None:
        return self.rows.packet


class Projector:
    def __init__(self, trust: Trust, *, partitions: int | None = None) -> None:
        """`partitions`: the events topic's partition count (None: placement unchecked,
        e.g. for the control topic)."""
        self.trust = trust
        self.partitions = partitions
        self.projections: dict[str, IncidentProjection] = {}
        self.partition_of: dict[str, int] = {}

    # -- steps ----------------------------------------------------------------------------

    def open(self, record: RecordLike) -> Trusted | Refused:
        """Steps 1 and 2: the trusted event, or why the record is refused."""
        try:
            trusted = self.trust.open(record)
        except UntrustedRecord as exc:
            return Refused(record, "untrusted", exc.reason, exc.detail)
        except UnreadableRecord as exc:
            return Refused(record, "unreadable", exc.reason, exc.detail)
        if self.partitions:
            topics = self.trust.topics
            wrong = misplaced(
                trusted.event.incident_id,
                topic=record.topic,
                partition=record.partition,
                partitions=self.partitions,
                events_topic=topics.events,
                control_topic=topics.control,
            )
            if wrong is not None:
                return Refused(record, "misplaced", WRONG_PARTITION, wrong)
        return trusted

    def needs(self, incident_id: str) -> bool:
        """True if the incident's fold is not held: seed it before `project` when the
        log is read from mid-way (otherwise it starts fresh)."""
        return incident_id not in self.projections

    def seed(self, projection: IncidentProjection, partition: int) -> None:
        incident_id = projection.state.incident_id
        self.projections[incident_id] = projection
        self.partition_of[incident_id] = partition

    def project(
        self, record: RecordLike, trusted: Trusted, batch: BatchRows | None = None
    ) -> Projected:
        """Step 3 (the record passed `open`): fold it and return its rows, also added to
        `batch` if given (whose `incidents()` then gives its incident's row)."""
        incident_id = trusted.event.incident_id
        proj = self.projections.get(incident_id)
        if proj is None:
            proj = IncidentProjection.new(incident_id)
            self.seed(proj, record.partition)
        where = Where(record.topic, record.partition, record.offset)
        rows = project_event(proj, trusted.event, where)
        if batch is not None:
            batch.add(proj, rows)
        return Projected(record, trusted, rows)

    def apply(self, record: RecordLike, batch: BatchRows | None = None) -> Projected | Refused:
        """All three steps, for a reader that holds every incident from its start."""
        opened = self.open(record)
        if isinstance(opened, Refused):
            return opened
        return self.project(record, opened, batch)

    def incident_row(self, incident_id: str) -> dict[str, Any]:
        """The incident's `incidents` row as folded so far (`projection.incident_row`)."""
        return incident_row(self.projections[incident_id])

    # -- forgetting -------------------------------------------------------------------------

    def forget_partition(self, partition: int) -> None:
        """Drop the folds of the partition's incidents (rebuilt on next use): after a
        failed transaction, or when the partition went to another consumer."""
        for incident_id, p in list(self.partition_of.items()):
            if p == partition:
                self.projections.pop(incident_id, None)
                del self.partition_of[incident_id]
