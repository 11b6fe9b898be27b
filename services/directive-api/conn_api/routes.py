"""HTTP routes of the API under /v1: one module per resource in `conn_api.api`
(incidents and authority, directives, control verbs, reads), mounted here in order.

The shared parts (path parameters, documented errors) and the route functions that
the console calls are re-exported from here."""

from __future__ import annotations

from fastapi import APIRouter

from conn_api.api import control, directives, incidents, reads
from conn_api.api.common import (
    ERRORS,
    CorrelationPath,
    IncidentPath,
    new_incident_id,
    open_state,
)
from conn_api.api.common import open_state as _open_state
from conn_api.api.control import (
    accept_takeover,
    close_incident,
    get_control,
    handoff,
    hold,
    kill_switch_off,
    kill_switch_on,
    resume,
)

router = APIRouter()
for _resource in (incidents, directives, control, reads):
    router.include_router(_resource.router)

__all__ = [
    "ERRORS",
    "CorrelationPath",
    "IncidentPath",
    "_open_state",
    "accept_takeover",
    "close_incident",
    "get_control",
    "handoff",
    "hold",
    "kill_switch_off",
    "kill_switch_on",
    "new_incident_id",
    "open_state",
    "resume",
    "router",
]
