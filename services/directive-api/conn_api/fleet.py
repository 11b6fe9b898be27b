"""`GET /v1/fleet/report`: the fleet SLIs (conn_core.fleet) over every incident.

Computed from this service's fold of `conn.events`: the trusted events of each
incident in log order, the same sequence the packager's read model holds and
`conn replay` rebuilds from the topic, so the three agree by construction (one
pure function over one sequence)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Query

from conn_api.deps import CurrentUser, RuntimeDep, require_role
from conn_api.errors import ApiError, ErrorResponse
from conn_api.responses import FleetReport
from conn_api.runtime import Runtime
from conn_api.view import LedgerEntry
from conn_core import fleet
from conn_schemas.values import Role

router = APIRouter(prefix="/v1")

READERS = (Role.COMMANDER, Role.ADMIN, Role.OBSERVER, Role.SPECIALIST)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No or invalid bearer token"},
    403: {"model": ErrorResponse, "description": "The caller's role may not read the report"},
    422: {"model": ErrorResponse, "description": "Invalid window"},
}

Bound = Annotated[str | None, Query(max_length=64, description="ISO 8601 date or time (UTC)")]


_CACHE: dict[str, tuple[int, str, fleet.IncidentSLIs]] = {}
"""incident -> (ledger length, head hash, its facts): an incident is recomputed only
when its ledger changed (the head hash covers every entry before it)."""


class Ledgers(Protocol):
    ledgers: dict[str, list[LedgerEntry]]


def incident_figures(view: Ledgers) -> list[fleet.IncidentSLIs]:
    """Every incident's fleet facts (conn_core.fleet.incident_slis) over its ledger."""
    out = []
    for incident_id, ledger in list(view.ledgers.items()):
        if not ledger:
            continue
        mark = (len(ledger), ledger[-1].hash)
        hit = _CACHE.get(incident_id)
        if hit is None or hit[:2] != mark:
            facts = fleet.incident_slis(entry.event for entry in ledger)[incident_id]
            hit = _CACHE[incident_id] = (*mark, facts)
        out.append(hit[2])
    return out


def report(rt: Runtime, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    try:
        start, end = fleet.window(since, until)
    except ValueError as exc:
        raise ApiError(422, "invalid_window", str(exc)) from None
    answer: dict[str, Any] = fleet.report_from(incident_figures(rt.view), since=start, until=end)
    return answer


@router.get("/fleet/report", tags=["reads"], responses=ERRORS, response_model=FleetReport)
async def get_fleet_report(
    rt: RuntimeDep, me: CurrentUser, since: Bound = None, until: Bound = None
) -> FleetReport:
    """Fleet SLIs over every incident that started in [since, until), with a trend per
    ISO week. Definitions: README, "Fleet SLIs"."""
    require_role(me, *READERS, doing="read the fleet report")
    return FleetReport.model_validate(report(rt, since, until))
