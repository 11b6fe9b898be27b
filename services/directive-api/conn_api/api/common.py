"""What the route modules share: path parameters, the documented error answers, the
open incident's state and the ledger head."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path

from conn_api.errors import ApiError, ErrorResponse
from conn_api.runtime import Runtime
from conn_core.state import IncidentState
from conn_schemas.values import (
    INCIDENT_ID_PATTERN,
    IncidentId,
    RefusalReason,
)

IncidentPath = Annotated[
    IncidentId, Path(min_length=1, max_length=128, pattern=INCIDENT_ID_PATTERN)
]
"""The input policy's incident id (reserved ids such as '_global' are 422 here)."""
CorrelationPath = Annotated[str, Path(min_length=1, max_length=200)]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Unparseable request body"},
    401: {"model": ErrorResponse, "description": "No or invalid bearer token"},
    403: {
        "model": ErrorResponse,
        "description": "The caller's role or authority does not allow this",
    },
    404: {"model": ErrorResponse, "description": "Unknown incident or directive"},
    409: {
        "model": ErrorResponse,
        "description": "Conflicts with the incident's state (hold, kill switch, stale...)",
    },
    413: {
        "model": ErrorResponse,
        "description": "Body over CONN_API_MAX_BODY_BYTES, or an event larger than the log accepts",
    },
    422: {"model": ErrorResponse, "description": "Invalid request"},
    503: {
        "model": ErrorResponse,
        "description": "A dependency is away (unavailable), or an append was not acknowledged "
        "(outcome_unknown: retry with the same Idempotency-Key); Retry-After",
    },
}


def new_incident_id() -> str:
    return f"INC-{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:6]}"


def open_state(rt: Runtime, incident_id: str) -> IncidentState:
    state = rt.view.state(incident_id)
    if not state.opened:
        raise ApiError.refused(
            RefusalReason.INCIDENT_NOT_OPEN, f"incident {incident_id} is not open"
        )
    return state


def ledger_head(rt: Runtime, incident_id: str) -> dict[str, Any] | None:
    ledger = rt.view.ledger(incident_id)
    return {"sequence": ledger[-1].sequence, "hash": ledger[-1].hash} if ledger else None
