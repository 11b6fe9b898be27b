"""The one projection shared by the live packager and `conn replay`:
(incident projection so far, event, Kafka position) -> rows for the read model.

Pure (no I/O). It advances the incident's fold (`conn_core.fold.evolve`) and
hash chain (`conn_core.chain.link`) and decides whether the event makes a
takeover packet due: the fold's hold went from None to set, or a handoff
(TakeoverRequested) was honoured by the fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conn_core.chain import GENESIS, link_raw
from conn_core.fold import evolve
from conn_core.state import IncidentState
from conn_packager.packet import (
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
    TakeoverRequested,
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

    @classmethod
    def new(cls, incident_id: str) -> IncidentProjection:
        return cls(IncidentState(incident_id=incident_id))


@dataclass(frozen=True)
class PacketDue:
    packet: TakeoverPacket
    sha256: str
    markdown: str

    @property
    def trigger(self) -> Trigger:
        return self.packet.trigger


@dataclass
class Rows:
    """What one event writes to the read model."""

    ledger: dict[str, Any]
    incident: dict[str, Any]
    snapshot: dict[str, Any] | None = None
    packet: PacketDue | None = None
    published: dict[str, Any] | None = None
    """For TakeoverPacketPublished: marks the packet row published."""
    notes: list[str] = field(default_factory=list)


def _trigger(
    before_hold: bool, ignored_before: int, state: IncidentState, event: Envelope
) -> tuple[Trigger, str | None] | None:
    if isinstance(event, TakeoverRequested) and state.ignored_controls == ignored_before:
        return "handoff", event.payload.to_team
    if not before_hold and state.hold is not None:
        return "hold", state.takeover_requested_to
    return None


def project(proj: IncidentProjection, event: Envelope, where: Where) -> Rows:
    """Fold `event` into `proj` (mutated) and return the rows it produces."""
    state = proj.state
    before_hold = state.hold is not None
    ignored_before = state.ignored_controls
    raw = to_raw(event)
    prev = proj.head
    proj.head = link_raw(prev, raw)
    evolve(state, event)

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
    bridge = bridge_state(state, proj.head)
    incident = {
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
        "bridge": bridge,
    }
    rows = Rows(ledger=ledger, incident=incident)

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

    due = _trigger(before_hold, ignored_before, state, event)
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
