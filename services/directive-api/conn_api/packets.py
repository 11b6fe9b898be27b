"""Takeover packet reads.

The packet content lives with the packager (services/packager): when its read
model exposes `conn_packager.readmodel.latest_packet(pool, incident_id)` the API
returns the full packet from there; otherwise it answers from the log with the
TakeoverPacketPublished reference (sha256, ledger head) the receiving team
needs to accept the takeover.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

from conn_api.runtime import Runtime
from conn_core.state import IncidentState
from conn_schemas.codec import to_raw
from conn_schemas.events import TakeoverPacketPublished

log = logging.getLogger(__name__)


def _readmodel_reader() -> Any:
    try:
        mod = importlib.import_module("conn_packager.readmodel")
    except ImportError:
        return None
    return getattr(mod, "latest_packet", None)


async def packet_for(rt: Runtime, state: IncidentState) -> dict[str, Any] | None:
    published = next(
        (
            e
            for e in reversed(rt.view.ledger(state.incident_id))
            if isinstance(e.event, TakeoverPacketPublished)
        ),
        None,
    )
    if published is None:
        return None
    assert isinstance(published.event, TakeoverPacketPublished)
    p = published.event.payload
    out: dict[str, Any] = {
        "incident_id": state.incident_id,
        "packet_id": p.packet_id,
        "packet_sha256": p.packet_sha256,
        "to_team": p.to_team,
        "trigger": p.trigger,
        "ledger_sequence": p.ledger_sequence,
        "ledger_hash": p.ledger_hash,
        "published_at_sequence": published.sequence,
        "published_event": to_raw(published.event),
        "packet": None,
        "source": "ledger",
    }
    reader = _readmodel_reader()
    if reader is not None:
        try:
            result = reader(rt.db, state.incident_id)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.warning("packager read model unavailable", exc_info=True)
        else:
            if result is not None:
                out["packet"] = (
                    result
                    if isinstance(result, dict)
                    else getattr(result, "model_dump", lambda **_: result)(mode="json")
                )
                out["source"] = "packager"
    return out
