"""HTTP routes of the two-person rule (DESIGN.md invariant 11).

`GET /v1/incidents/{id}/approvals` lists the directives waiting for approvers with
their decision packets (and the packet's hash); `POST .../approvals/{correlation_id}`
records the authenticated caller's approval or decline of one exact packet, as a
signed `ApprovalRecorded` / `ApprovalDeclined`, after checking it with the same pure
rule the fold applies (`conn_core.approvals.check_vote`): a stale packet hash, the
issuer approving their own directive, a second approval by the same person or an
unentitled approver is answered with a 4xx and nothing is appended. Approving and
executing stay separate ledger facts: the executor runs the step once the quorum is
in the log, re-checked like any directive.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from conn_api import metrics
from conn_api.deps import CurrentUser, RuntimeDep
from conn_api.errors import ApiError
from conn_api.models import ApprovalDecision
from conn_api.responses import ApprovalAnswer, ApprovalList
from conn_api.routes import ERRORS, CorrelationPath, IncidentPath, _open_state
from conn_core import approvals as core
from conn_schemas.approvals import ApprovalDeclinedPayload, ApprovalRecordedPayload
from conn_schemas.events import ApprovalDeclined, ApprovalRecorded, new_event

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


@router.get(
    "/incidents/{incident_id}/approvals",
    tags=["approvals"],
    responses=ERRORS,
    response_model=ApprovalList,
)
async def list_approvals(
    incident_id: IncidentPath,
    rt: RuntimeDep,
    _me: CurrentUser,  # signed in; any role may read
    include_done: Annotated[
        bool, Query(description="Also approved-and-run, declined and cancelled ones")
    ] = False,
) -> ApprovalList:
    """Directives waiting for approvers, each with its decision packet and hash."""
    state = _open_state(rt, incident_id)
    items = core.pending(state, datetime.now(UTC), include_done=include_done)
    return ApprovalList(incident_id=incident_id, ledger_sequence=state.sequence, items=items)


@router.post(
    "/incidents/{incident_id}/approvals/{correlation_id}",
    tags=["approvals"],
    responses=ERRORS,
    response_model=ApprovalAnswer,
)
async def decide_approval(
    incident_id: IncidentPath,
    correlation_id: Annotated[CorrelationPath, Path()],
    body: ApprovalDecision,
    rt: RuntimeDep,
    me: CurrentUser,
) -> ApprovalAnswer:
    """Approve or decline one directive's exact decision packet (by its hash)."""
    approve = body.decision == "approve"
    if not approve and not body.detail.strip():
        raise ApiError(422, "invalid_request", "say why you decline (detail)")
    async with rt.locks[incident_id]:
        await rt.view.wait_current(incident_id, 1.0)
        state = _open_state(rt, incident_id)
        if correlation_id not in state.approvals:
            raise ApiError(
                404, "not_found", f"directive {correlation_id} is not waiting for approval"
            )
        event: ApprovalRecorded | ApprovalDeclined
        if approve:
            event = new_event(
                ApprovalRecorded,
                incident_id=incident_id,
                payload=ApprovalRecordedPayload(
                    packet_sha256=body.packet_sha256, detail=body.detail
                ),
                actor=me.actor(),
                producer=rt.producer.principal,
                correlation_id=correlation_id,
            )
        else:
            event = new_event(
                ApprovalDeclined,
                incident_id=incident_id,
                payload=ApprovalDeclinedPayload(
                    packet_sha256=body.packet_sha256, reason=body.detail
                ),
                actor=me.actor(),
                producer=rt.producer.principal,
                correlation_id=correlation_id,
            )
        refusal = core.check_vote(state, event)
        if refusal is not None:
            metrics.APPROVALS.labels(body.decision, refusal.reason.value).inc()
            raise ApiError.refused(refusal.reason, refusal.detail)
        written = await rt.append_and_fold(event)
        after = rt.view.state(incident_id)
        track = after.approvals.get(correlation_id)
    if written["folded"] and not core.counted(after, event):
        # Checked on a view that lagged behind the log (e.g. the step started, or its
        # packet changed, before this vote landed): in the ledger, but it changes nothing.
        metrics.APPROVALS.labels(body.decision, "not_counted").inc()
        raise ApiError(
            409,
            "vote_not_counted",
            f"your {'approval' if approve else 'decline'} of {correlation_id} was recorded "
            "but does not count: the directive changed before it landed (started, decided, "
            "or a new decision packet); read the approvals again",
            {k: written[k] for k in ("event_id", "sequence", "folded")},
        )
    metrics.APPROVALS.labels(body.decision, "recorded").inc()
    quorum = bool(track and track.quorum)
    if approve and quorum and track is not None and track.quorum_at is not None:
        metrics.TIME_TO_APPROVAL.observe(
            max(0.0, (track.quorum_at - track.issued_at).total_seconds())
        )
    log.info(
        "approval recorded" if approve else "approval declined",
        extra={"incident_id": incident_id, "correlation_id": correlation_id, "actor": me.id},
    )
    return ApprovalAnswer.model_validate(
        {
            "incident_id": incident_id,
            "correlation_id": correlation_id,
            "decision": "approved" if approve else "declined",
            "by": me.id,
            "packet_sha256": body.packet_sha256,
            "approvals": len(track.approvers) if track else None,
            "required": track.rule.count if track else None,
            "quorum": quorum,
            **written,
        }
    )
