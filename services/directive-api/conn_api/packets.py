"""Takeover packet reads.

The log (this service's fold) says which packet is the latest published one
(TakeoverPacketPublished: sha256, ledger head) — that is what a receiving team
accepts, by its exact hash, while it is `current` (the incident has not changed
since the position it describes; otherwise a newer packet is due and acceptance
is refused until it is read). Its full content lives with the packager: when its read model
(`conn_readmodel.queries`) has the packet with that sha256, it is returned as
`packet` (`source: "packager"`); otherwise `packet` is null (`source: "ledger"`).
"""

from __future__ import annotations

import logging
from typing import Any

from conn_api.runtime import Runtime
from conn_core.state import IncidentState
from conn_schemas.codec import to_raw
from conn_schemas.events import TakeoverPacketPublished

log = logging.getLogger(__name__)


async def packet_for(rt: Runtime, state: IncidentState) -> dict[str, Any] | None:
    published = None
    event: TakeoverPacketPublished | None = None
    latest = state.last_packet.sha256 if state.last_packet else None
    for entry in reversed(rt.view.ledger(state.incident_id)):
        if isinstance(entry.event, TakeoverPacketPublished) and (
            latest is None or entry.event.payload.packet_sha256 == latest
        ):
            published, event = entry, entry.event
            break
    if published is None or event is None:
        return None
    p = event.payload
    out: dict[str, Any] = {
        "incident_id": state.incident_id,
        "packet_id": p.packet_id,
        "packet_sha256": p.packet_sha256,
        "to_team": p.to_team,
        "trigger": p.trigger,
        "ledger_sequence": p.ledger_sequence,
        "ledger_hash": p.ledger_hash,
        "published_at_sequence": published.sequence,
        "current": state.last_packet is not None
        and state.last_packet.sha256 == p.packet_sha256
        and state.packet_changed_at <= state.last_packet.basis,
        "takeover_pending": not state.closed
        and (state.hold is not None or state.takeover_requested_to is not None),
        "published_event": to_raw(event),
        "packet": None,
        "markdown": None,
        "source": "ledger",
    }
    if rt.read_model is not None:
        found = await rt.read_model.packet(state.incident_id, p.packet_sha256)
        if found is not None:
            out.update(found)
            out["source"] = "packager"
    return out
