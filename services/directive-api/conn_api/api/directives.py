"""Directives: issue one bounded action, list and read directives, decision packets."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from conn_api import directives
from conn_api.api.common import (
    ERRORS,
    CorrelationPath,
    IncidentPath,
    open_state,
)
from conn_api.deps import CurrentUser, RuntimeDep
from conn_api.disclosure import for_reader
from conn_api.errors import ApiError
from conn_api.present import (
    decision_packet,
    directive_json,
)
from conn_api.responses import (
    DecisionPacketView,
    DirectiveIssuedAnswer,
    DirectiveList,
    DirectiveView,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


# --- directives ------------------------------------------------------------------------

DIRECTIVE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DirectiveRequest"}}
        },
    }
}


@router.post(
    "/incidents/{incident_id}/directives",
    status_code=202,
    tags=["directives"],
    openapi_extra=DIRECTIVE_BODY,
    responses={
        **ERRORS,
        202: {"model": DirectiveIssuedAnswer, "description": "Issued: appended as DirectiveIssued"},
    },
)
async def post_directive(
    incident_id: IncidentPath,
    request: Request,
    rt: RuntimeDep,
    me: CurrentUser,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    """Direct one bounded action (DirectiveRequest). Pre-checked with the core rules;
    a refusal is answered with its RefusalReason code and appended as DirectiveRefused."""
    raw = await request.body()
    try:
        body: Any = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = {"_unparseable": raw[:200].decode(errors="replace")}
    status, response = await directives.issue(rt, incident_id, body, me, idempotency_key)
    return JSONResponse(response, status_code=status)


@router.get(
    "/incidents/{incident_id}/directives",
    tags=["directives"],
    responses=ERRORS,
    response_model=DirectiveList,
)
async def list_directives(
    incident_id: IncidentPath, rt: RuntimeDep, me: CurrentUser
) -> DirectiveList:
    state = open_state(rt, incident_id)
    return DirectiveList.model_validate(
        {"items": [for_reader(me, directive_json(d)) for d in state.directives.values()]}
    )


@router.get(
    "/incidents/{incident_id}/directives/{correlation_id}",
    tags=["directives"],
    responses=ERRORS,
    response_model=DirectiveView,
)
async def get_directive(
    incident_id: IncidentPath, correlation_id: CorrelationPath, rt: RuntimeDep, me: CurrentUser
) -> DirectiveView:
    state = open_state(rt, incident_id)
    record = state.directives.get(correlation_id)
    if record is None:
        raise ApiError(404, "not_found", f"no directive {correlation_id} in {incident_id}")
    return DirectiveView.model_validate(for_reader(me, directive_json(record)))


@router.get(
    "/incidents/{incident_id}/directives/{correlation_id}/decision-packet",
    tags=["directives"],
    responses=ERRORS,
    response_model=DecisionPacketView,
)
async def get_decision_packet(
    incident_id: IncidentPath, correlation_id: CorrelationPath, rt: RuntimeDep, me: CurrentUser
) -> DecisionPacketView:
    """Evidence, preconditions, risk and blast radius, rollback hint and verification
    criteria for one directive."""
    state = open_state(rt, incident_id)
    record = state.directives.get(correlation_id)
    if record is None:
        raise ApiError(404, "not_found", f"no directive {correlation_id} in {incident_id}")
    packet = decision_packet(state, record, rt.view.ledger(incident_id), rt.view.folds.control)
    return DecisionPacketView.model_validate(for_reader(me, packet))
