"""Dry run and recorded undo over HTTP.

- `POST /v1/incidents/{id}/directives/dry-run` takes the same body as a directive. It is
  authenticated and decided exactly like one (the same `decide`: a dry run outside the
  authority is refused with the same status and RefusalReason code), then asks the
  target's adapter for the exact change it would make: a server-side dry run where the
  target supports it (Kubernetes `dryRun=All`), a computed diff otherwise (Unleash). It
  appends NOTHING to the event log (no DirectiveIssued, no DirectiveRefused: a dry run is
  not a fact of the incident) and changes nothing; it is logged and counted
  (`conn_api_dry_runs_total`) for the operator.
- `POST /v1/incidents/{id}/directives/{correlation_id}/undo` issues the inverse recorded
  in that step's StepStarted as a bounded directive of its own (through the same path as
  any directive: idempotency, `decide`, DirectiveIssued, the executor's re-checks, the
  verifier). 404 if no such step, 409 `no_undo` / `irreversible` / `already_undone`. With
  `"dry_run": true` it previews the inverse instead.

The API needs the adapters' settings (CONN_FLAGS_BACKEND, CONN_ORCHESTRATOR_BACKEND...)
for dry runs, as the executor does; Kubernetes' dry run needs `patch` RBAC on
deployments and deployments/scale.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from conn_adapters.config import Adapters, AdapterSettings, build_adapters
from conn_api import directives, metrics
from conn_api.deps import CurrentUser, RuntimeDep
from conn_api.errors import ApiError, ErrorResponse
from conn_api.models import Body, DirectiveRequest
from conn_api.responses import DirectiveIssuedAnswer, DryRunAnswer
from conn_api.routes import ERRORS, CorrelationPath, IncidentPath
from conn_api.runtime import Runtime
from conn_core.ports import PortError
from conn_core.rules import Refused, decide
from conn_core.undo import NoUndo, undo_action
from conn_schemas.undo import ChangePreview
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    Action,
    Detail,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    RefusalReason,
    RestartDependencyTier,
    ScaleWorkerPool,
    describe_action,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


class UndoRequest(Body):
    based_on_sequence: int = Field(ge=0, le=2**62)
    rationale: Detail = ""
    dry_run: bool = False


def preview_adapters(rt: Runtime) -> Adapters:
    """The adapters dry runs ask (built on first use from CONN_* settings)."""
    if rt.adapters is None:
        rt.adapters = build_adapters(AdapterSettings())
    return rt.adapters


async def preview(adapters: Adapters, action: Action) -> ChangePreview:
    if isinstance(action, DisableFlagRule | EnableFlagRule):
        return await adapters.flags.preview_rule(
            action.flag, action.rule, action.region, enabled=isinstance(action, EnableFlagRule)
        )
    if isinstance(action, DrainWorkerPool):
        return await adapters.orchestrator.preview_scale(action.pool, action.region, 0)
    if isinstance(action, ScaleWorkerPool):
        return await adapters.orchestrator.preview_scale(
            action.pool, action.region, action.replicas
        )
    if isinstance(action, RestartDependencyTier):
        return await adapters.orchestrator.preview_restart(action.tier, action.region)
    raise ValueError(f"{action.action.value} has no side effect to preview")


async def dry_run(rt: Runtime, incident_id: str, body: Any, me: CurrentUser) -> dict[str, Any]:
    """Decide like a directive, then preview; append nothing."""
    await rt.view.wait_current(incident_id, 1.0)
    state = rt.view.state(incident_id)
    if not state.opened:
        raise ApiError.refused(
            RefusalReason.INCIDENT_NOT_OPEN, f"incident {incident_id} is not open"
        )
    try:
        request = DirectiveRequest.model_validate(body)
        payload = request.payload()
    except ValidationError as exc:
        first = exc.errors()[0]
        metrics.DRY_RUNS.labels("invalid").inc()
        raise ApiError.refused(
            RefusalReason.INVALID_DIRECTIVE,
            f"not a valid directive: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}",
        ) from None
    decision = decide(state, payload, me.actor(), rt.view.folds.control)
    if isinstance(decision, Refused):
        metrics.DRY_RUNS.labels("refused").inc()
        log.info(
            "dry run refused (nothing appended)",
            extra={"incident_id": incident_id, "actor": me.id, "reason": decision.reason.value},
        )
        raise ApiError.refused(
            decision.reason,
            decision.detail,
            {"dry_run": True, "checked_at_sequence": state.sequence},
        )
    action = payload.action
    answer: dict[str, Any] = {
        "dry_run": True,
        "incident_id": incident_id,
        "decision": "would_be_issued",
        "checked_at_sequence": state.sequence,
        "action": action.model_dump(mode="json"),
        "summary": describe_action(action),
        "consequential": action.action in CONSEQUENTIAL_ACTIONS,
        "recorded": False,
    }
    if action.action not in CONSEQUENTIAL_ACTIONS:
        answer["preview"] = None
        answer["detail"] = "not a side effect on a target: nothing to preview"
        metrics.DRY_RUNS.labels("read_only").inc()
        return answer
    try:
        change = await preview(preview_adapters(rt), action)
    except PortError as exc:
        metrics.DRY_RUNS.labels("target_error").inc()
        raise ApiError(
            502,
            "dry_run_failed",
            f"the target could not preview {describe_action(action)}: {str(exc)[:300]}",
            {"dry_run": True, "retriable": exc.retriable},
        ) from None
    metrics.DRY_RUNS.labels("previewed").inc()
    log.info(
        "dry run answered (nothing appended)",
        extra={
            "incident_id": incident_id,
            "actor": me.id,
            "action": describe_action(action),
            "would_change": change.would_change,
        },
    )
    answer["preview"] = change.model_dump(mode="json")
    return answer


@router.post(
    "/incidents/{incident_id}/directives/dry-run",
    tags=["directives"],
    responses={
        **ERRORS,
        200: {
            "model": DryRunAnswer,
            "description": "Would be issued: the exact change (nothing appended)",
        },
        502: {"model": ErrorResponse, "description": "The target could not answer the dry run"},
    },
    response_model=DryRunAnswer,
    response_model_exclude_unset=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/DirectiveRequest"}}
            },
        }
    },
)
async def post_dry_run(
    incident_id: IncidentPath, body: dict[str, Any], rt: RuntimeDep, me: CurrentUser
) -> DryRunAnswer:
    """Decide a directive (same body, same authority check) and ask the target for the
    exact change it would make, without making it. Appends nothing to the log."""
    return DryRunAnswer.model_validate(await dry_run(rt, incident_id, body, me))


@router.post(
    "/incidents/{incident_id}/directives/{correlation_id}/undo",
    status_code=202,
    tags=["directives"],
    responses={
        **ERRORS,
        200: {
            "model": DryRunAnswer,
            "description": "dry_run: the inverse's exact change (nothing appended)",
        },
        202: {
            "model": DirectiveIssuedAnswer,
            "description": "Issued: the recorded inverse, appended as DirectiveIssued",
        },
        502: {"model": ErrorResponse, "description": "The target could not answer the dry run"},
    },
)
async def post_undo(
    incident_id: IncidentPath,
    correlation_id: CorrelationPath,
    body: UndoRequest,
    rt: RuntimeDep,
    me: CurrentUser,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    """Issue the inverse recorded (before acting) in step `correlation_id`'s StepStarted
    as a bounded directive of its own, decided and verified like any other."""
    await rt.view.wait_current(incident_id, 1.0)
    state = rt.view.state(incident_id)
    if not state.opened:
        raise ApiError.refused(
            RefusalReason.INCIDENT_NOT_OPEN, f"incident {incident_id} is not open"
        )
    inverse = undo_action(state, correlation_id)
    if isinstance(inverse, NoUndo):
        raise ApiError(
            404 if inverse.code == "not_found" else 409,
            inverse.code,
            inverse.detail,
            {"correlation_id": correlation_id},
        )
    rationale = f"undo of step {correlation_id}" + (f": {body.rationale}" if body.rationale else "")
    directive = {
        "action": inverse.model_dump(mode="json"),
        "based_on_sequence": body.based_on_sequence,
        "rationale": rationale,
    }
    if body.dry_run:
        answer = await dry_run(rt, incident_id, directive, me)
        return JSONResponse({**answer, "undoes": correlation_id}, status_code=200)
    status, response = await directives.issue(rt, incident_id, directive, me, idempotency_key)
    if status >= 400:
        return JSONResponse(response, status_code=status)
    return JSONResponse({**response, "undoes": correlation_id}, status_code=status)
