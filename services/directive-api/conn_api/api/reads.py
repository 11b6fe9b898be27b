"""Reads: the ledger, the latest takeover packet, who am I."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query

from conn_api.api.common import (
    ERRORS,
    IncidentPath,
    ledger_head,
    open_state,
)
from conn_api.deps import CurrentUser, RuntimeDep
from conn_api.disclosure import ledger_items, privileged
from conn_api.errors import ApiError
from conn_api.packets import packet_for
from conn_api.responses import (
    LedgerPage,
    Me,
    PacketAnswer,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


# --- ledger and packets ----------------------------------------------------------------


@router.get(
    "/incidents/{incident_id}/ledger",
    tags=["reads"],
    responses=ERRORS,
    response_model=LedgerPage,
    response_model_exclude_unset=True,
)
async def get_ledger(
    incident_id: IncidentPath,
    rt: RuntimeDep,
    me: CurrentUser,
    after: Annotated[int, Query(ge=0, description="Return entries with sequence > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    event_type: Annotated[list[str] | None, Query(max_length=50)] = None,
    correlation_id: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
) -> LedgerPage:
    """The incident's ledger (sequence, hash, Kafka position, event), paginated by sequence.

    Served from the packager's read model when it has caught up with this service's
    fold for the incident (`source: "read_model"`), else from the fold (`"fold"`).
    Raw tool output and unscrubbed errors only for commander, specialist and admin
    (`view: "full"`); everyone else gets them withheld and scrubbed (`"redacted"`)."""
    open_state(rt, incident_id)
    view = "full" if privileged(me) else "redacted"
    ledger = rt.view.ledger(incident_id)
    head = ledger_head(rt, incident_id)
    rm = rt.read_model
    if (
        rm is not None
        and head is not None
        and await rm.caught_up(incident_id, head["sequence"], head["hash"])
    ):
        page = await rm.ledger(
            incident_id,
            after=after,
            limit=limit,
            event_types=event_type,
            correlation_id=correlation_id,
            actor=actor,
        )
        if page is not None:
            items, next_after = page
            return LedgerPage.model_validate(
                {
                    "incident_id": incident_id,
                    "items": ledger_items(me, items),
                    "view": view,
                    "next_after": next_after,
                    "head": head,
                    "source": "read_model",
                }
            )
    fold_items: list[dict[str, Any]] = []
    fold_next: int | None = None
    for entry in ledger:
        if entry.sequence <= after:
            continue
        e = entry.event
        if event_type and e.event_type not in event_type:
            continue
        if correlation_id and e.correlation_id != correlation_id:
            continue
        if actor and e.actor.id != actor:
            continue
        if len(fold_items) == limit:
            fold_next = fold_items[-1]["sequence"]
            break
        fold_items.append(entry.to_json())
    return LedgerPage.model_validate(
        {
            "incident_id": incident_id,
            "items": ledger_items(me, fold_items),
            "view": view,
            "next_after": fold_next,
            "head": head,
            "source": "fold",
        }
    )


@router.get(
    "/incidents/{incident_id}/packet",
    tags=["reads"],
    responses=ERRORS,
    response_model=PacketAnswer,
    response_model_exclude_unset=True,
)
async def get_packet(incident_id: IncidentPath, rt: RuntimeDep, _me: CurrentUser) -> PacketAnswer:
    """The latest published takeover packet: its reference from the log, and its full
    content from the packager's read model (`source: "packager"`) when available."""
    state = open_state(rt, incident_id)
    packet = await packet_for(rt, state)
    if packet is None:
        raise ApiError(404, "not_found", f"no takeover packet published for {incident_id}")
    return PacketAnswer.model_validate(packet)


@router.get("/me", tags=["reads"], responses=ERRORS, response_model=Me)
async def whoami(me: CurrentUser) -> Me:
    """Who the bearer token says you are."""
    return Me(id=me.id, roles=[r.value for r in me.roles], team=me.team, kind=me.kind, via=me.via)
