"""The one projection shared by the live packager and `conn replay`:
(incident projection so far, event, Kafka position) -> rows for the read model.

Pure (no I/O). It advances the incident's fold (`conn_core.fold.evolve`) and
hash chain (`conn_core.chain.link`) and decides whether the event makes a
takeover packet due. Packets are always current (invariant 9): while a takeover
is possible (the incident is on hold or a handoff was requested, and it is not
closed), a new packet is due whenever the fold says a packet's content changed
(`IncidentState.packet_changed_at`: hold reason, verdicts, partial changes,
pending/blocked directives, holder, authority, readings...) since the last one.
The same rule makes the core refuse accepting a packet the incident moved past.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conn_core.chain import GENESIS, link_raw
from conn_core.fold import evolve
from conn_core.state import IncidentState
from conn_readmodel.packet import (
    Trigger,
    bridge_state,
    build_packet,
    packet_sha256,
    render_markdown,
)
from conn_schemas.codec import to_raw
from conn_schemas.events import (
    Envelope,
    TakeoverPacketPublished,
    VerificationSnapshot,
)
from conn_schemas.packet import TakeoverPacket


@dataclass(frozen=True)
class Where:
    topic: str
    partition: int
    offset: int


@dataclass
class IncidentProjection:
    """An incident's fold and ledger head (hash of its last entry)."""

    state: IncidentState
    head: str = GENESIS
    packet_basis: int = 0
    """Ledger position of the last packet made due (0: none yet)."""

    @classmethod
    def new(cls, incident_id: str) -> IncidentProjection:
        return cls(IncidentState(incident_id=incident_id))

    def advance(self, event: Envelope) -> tuple[Trigger, str | None] | None:
        """Fold `event`; return (trigger, to_team) if it makes a new packet due."""
        evolve(self.state, event)
        due = packet_due(self.state, self.packet_basis)
        if due is not None:
            self.packet_basis = self.state.sequence
        return due


@dataclass(frozen=True)
class PacketDue:
    packet: TakeoverPacket
    sha256: str
    markdown: str

    @property
    def trigger(self) -> Trigger:
        return self.packet.trigger


@dataclass
class EventRows:
    """What one event writes to the read model besides its incident's row: its ledger
    entry, a snapshot, a takeover packet made due, a packet marked published."""

    ledger: dict[str, Any]
    snapshot: dict[str, Any] | None = None
    packet: PacketDue | None = None
    published: dict[str, Any] | None = None
    """For TakeoverPacketPublished: marks the packet row published."""
    notes: list[str] = field(default_factory=list)

    @property
    def sequence(self) -> int:
        return int(self.ledger["sequence"])

    @property
    def head(self) -> str:
        return str(self.ledger["hash"])


@dataclass(kw_only=True)
class Rows(EventRows):
    """What one event writes to the read model, its incident's row (and bridge) included."""

    incident: dict[str, Any]


def takeover_possible(state: IncidentState) -> bool:
    """A takeover packet is meaningful: on hold, or a handoff requested (not closed)."""
    return (
        state.opened
        and not state.closed
        and (state.hold is not None or state.takeover_requested_to is not None)
    )


def packet_due(state: IncidentState, last_basis: int) -> tuple[Trigger, str | None] | None:
    """A new packet is due when a takeover is possible and its content changed since
    the last packet (made at `last_basis`)."""
    if not takeover_possible(state) or state.packet_changed_at <= last_basis:
        return None
    if state.takeover_requested_to is not None:
        return "handoff", state.takeover_requested_to
    return "hold", None


def incident_row(proj: IncidentProjection) -> dict[str, Any]:
    """The incident's `incidents` row (bridge state included) as folded so far: written
    once per incident per batch, after the batch's last event of the incident."""
    state = proj.state
    return {
        "incident_id": state.incident_id,
        "title": state.title,
        "service": state.service,
        "opened": state.opened,
        "closed": state.closed,
        "opened_at": state.opened_at,
        "sequence": state.sequence,
        "head_hash": proj.head,
        "holder": state.holder.identity if state.holder else None,
        "on_hold": state.hold is not None,
        "hold_reason": state.hold.reason.value if state.hold else None,
        "open_step": state.open_step,
        "last_verdict": state.last_verdict.value if state.last_verdict else None,
        "last_event_at": state.last_event_at,
        "bridge": bridge_state(state, proj.head),
    }


def project(proj: IncidentProjection, event: Envelope, where: Where) -> Rows:
    """Fold `event` into `proj` (mutated) and return every row it produces, its
    incident's row included (a batch of one event)."""
    rows = project_event(proj, event, where)
    return Rows(
        ledger=rows.ledger,
        snapshot=rows.snapshot,
        packet=rows.packet,
        published=rows.published,
        notes=rows.notes,
        incident=incident_row(proj),
    )


def project_event(proj: IncidentProjection, event: Envelope, where: Where) -> EventRows:
    """Fold `event` into `proj` (mutated) and return the rows only this event produces;
    its incident's row is `incident_row(proj)` once the batch is folded."""
    state = proj.state
    raw = to_raw(event)
    prev = proj.head
    proj.head = link_raw(prev, raw)
    due = proj.advance(event)

    ledger = {
        "incident_id": event.incident_id,
        "sequence": state.sequence,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "actor": event.actor.id,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "prev_hash": prev,
        "hash": proj.head,
        "raw": raw,
        "kafka_topic": where.topic,
        "kafka_partition": where.partition,
        "kafka_offset": where.offset,
    }
    rows = EventRows(ledger=ledger)

    if isinstance(event, VerificationSnapshot):
        p = event.payload
        rows.snapshot = {
            "incident_id": event.incident_id,
            "sequence": state.sequence,
            "event_id": event.event_id,
            "step_correlation_id": p.step_correlation_id,
            "verdict": p.verdict.value,
            "detail": p.detail,
            "regions": [r.model_dump(mode="json") for r in p.regions],
            "control_plane": [c.model_dump(mode="json") for c in p.control_plane],
            "window_started_at": p.window_started_at,
            "window_ended_at": p.window_ended_at,
            "occurred_at": event.occurred_at,
        }
    elif isinstance(event, TakeoverPacketPublished):
        p2 = event.payload
        rows.published = {
            "incident_id": event.incident_id,
            "ledger_sequence": p2.ledger_sequence,
            "packet_sha256": p2.packet_sha256,
            "published_sequence": state.sequence,
            "published_event_id": event.event_id,
        }

    if due is not None:
        packet = build_packet(
            state,
            head_hash=proj.head,
            trigger=due[0],
            to_team=due[1],
            generated_at=event.occurred_at,
        )
        sha = packet_sha256(packet)
        rows.packet = PacketDue(packet, sha, render_markdown(packet, sha))
    return rows


@dataclass
class BatchRows:
    """The rows of a batch of events (any number, any incidents, in log order), as ONE
    write: every event's own rows in order, and each touched incident's row once, from
    its fold after the batch's last event of it (`close`). Written per event, the
    incident's row would be overwritten by each later event of the batch, so the last
    one is all that remains: the same tables, with the bridge built once per incident
    per batch instead of once per event. Pure (no I/O)."""

    ledger: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    packets: list[PacketDue] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)
    """Packets marked published, in log order (the first mark of a packet wins)."""
    touched: dict[str, IncidentProjection] = field(default_factory=dict)
    """Incidents with an event in the batch (their folds, as the batch leaves them)."""

    def add(self, proj: IncidentProjection, rows: EventRows) -> None:
        """One event's rows (its incident's fold `proj` already advanced past it)."""
        self.ledger.append(rows.ledger)
        if rows.snapshot is not None:
            self.snapshots.append(rows.snapshot)
        if rows.packet is not None:
            self.packets.append(rows.packet)
        if rows.published is not None:
            self.published.append(rows.published)
        self.touched[proj.state.incident_id] = proj

    def __len__(self) -> int:
        return len(self.ledger)

    def incidents(self) -> list[dict[str, Any]]:
        """Each touched incident's row, built now: call once the batch is folded (and
        before any later event is folded into the same projections)."""
        return [incident_row(proj) for proj in self.touched.values()]
