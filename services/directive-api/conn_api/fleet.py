"""`GET /v1/fleet/report`: the fleet SLIs (conn_core.fleet) over every incident.

Computed from this service's fold of `conn.events`: the trusted events of each
incident in log order, the same sequence the packager's read model holds and
`conn replay` rebuilds from the topic, so the three agree by construction (one
pure function over one sequence)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query

from conn_api.deps import CurrentUser, RuntimeDep, require_role
from conn_api.errors import ApiError, ErrorResponse
from conn_api.runtime import Runtime
from conn_core import fleet
from conn_schemas.events import Envelope
from conn_schemas.values import Role

router = APIRouter(prefix="/v1")

READERS = (Role.COMMANDER, Role.ADMIN, Role.OBSERVER, Role.SPECIALIST)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No or invalid bearer token"},
    403: {"model": ErrorResponse, "description": "The caller's role may not read the report"},
    422: {"model": ErrorResponse, "description": "Invalid window"},
}

Bound = Annotated[str | None, Query(max_length=64, description="ISO 8601 date or time (UTC)")]


def ledger_events(rt: Runtime) -> Iterator[Envelope]:
    """Every incident's folded events, each incident in its log order."""
    for incident_id in sorted(rt.view.ledgers):
        for entry in rt.view.ledger(incident_id):
            yield entry.event


def report(rt: Runtime, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    try:
        start, end = fleet.window(since, until)
    except ValueError as exc:
        raise ApiError(422, "invalid_window", str(exc)) from None
    return fleet.fleet_report(ledger_events(rt), since=start, until=end)


@router.get("/fleet/report", tags=["reads"], responses=ERRORS)
async def get_fleet_report(
    rt: RuntimeDep, me: CurrentUser, since: Bound = None, until: Bound = None
) -> dict[str, Any]:
    """Fleet SLIs over every incident that started in [since, until), with a trend per
    ISO week. Definitions: README, "Fleet SLIs"."""
    require_role(me, *READERS, doing="read the fleet report")
    return report(rt, since, until)
