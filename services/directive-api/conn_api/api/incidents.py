"""Incidents and their authority: open, list, read the bridge state, declare and
approve authority changes."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from conn_api import metrics
from conn_api.api.common import (
    ERRORS,
    IncidentPath,
    new_incident_id,
    open_state,
)
from conn_api.deps import CurrentUser, RuntimeDep, require_role
from conn_api.errors import ApiError
from conn_api.models import (
    ApproveAuthority,
    DeclareAuthority,
    OpenIncident,
)
from conn_api.present import (
    authority_json,
    incident_view,
    summary_view,
)
from conn_api.responses import (
    AuthorityAnswer,
    AuthorityApprovedAnswer,
    AuthorityDeclaredAnswer,
    AuthorityProposedAnswer,
    IncidentList,
    IncidentOpenedAnswer,
    IncidentView,
)
from conn_api.runtime import PRODUCER, Runtime
from conn_core.authority import AuthorityFileError, parse_authority, widenings
from conn_core.rules import check_authority
from conn_schemas.events import (
    AuthorityChangeApproved,
    AuthorityChangeApprovedPayload,
    AuthorityChangeProposed,
    AuthorityChangeProposedPayload,
    AuthorityDeclared,
    AuthorityDeclaredPayload,
    IncidentOpened,
    IncidentOpenedPayload,
    new_event,
)
from conn_schemas.values import (
    RefusalReason,
    Role,
    bounded_lines,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


# --- incidents -------------------------------------------------------------------------


@router.post(
    "/incidents",
    status_code=201,
    responses=ERRORS,
    tags=["incidents"],
    response_model=IncidentOpenedAnswer,
)
async def open_incident(
    body: OpenIncident, rt: RuntimeDep, me: CurrentUser
) -> IncidentOpenedAnswer:
    """Open an incident (IncidentOpened)."""
    require_role(me, Role.COMMANDER, Role.ADMIN, doing="open incidents")
    incident_id = body.incident_id or new_incident_id()
    async with rt.locks[incident_id]:
        if rt.view.state(incident_id).sequence > 0:
            raise ApiError(409, "conflict", f"incident {incident_id} already exists")
        event = new_event(
            IncidentOpened,
            incident_id=incident_id,
            payload=IncidentOpenedPayload(
                title=body.title, service=body.service, severity=body.severity
            ),
            actor=me.actor(),
            producer=rt.producer.principal,
        )
        written = await rt.append_and_fold(event)
    log.info("incident opened", extra={"incident_id": incident_id, "actor": me.id})
    return IncidentOpenedAnswer.model_validate({"incident_id": incident_id, **written})


@router.get("/incidents", tags=["incidents"], responses=ERRORS, response_model=IncidentList)
async def list_incidents(
    rt: RuntimeDep,
    _me: CurrentUser,
    status: Annotated[str | None, Query(pattern="^(open|on_hold|closed)$")] = None,
    service: Annotated[str | None, Query(max_length=128)] = None,
) -> IncidentList:
    """The incidents, newest first: each as the contract's BridgeSummary."""
    items = [summary_view(s) for s in rt.view.folds.states.values() if s.opened]
    if status:
        items = [i for i in items if i.status == status]
    if service:
        items = [i for i in items if i.service == service]
    items.sort(key=lambda i: i.opened_at.isoformat() if i.opened_at else "", reverse=True)
    return IncidentList(items=items)


@router.get(
    "/incidents/{incident_id}", tags=["incidents"], responses=ERRORS, response_model=IncidentView
)
async def get_incident(incident_id: IncidentPath, rt: RuntimeDep, _me: CurrentUser) -> IncidentView:
    """The bridge state (the contract's BridgeState, schemas/json/BridgeState.schema.json)
    from this service's fold of the log, plus the kill switch, health ages relative to
    now and every directive."""
    state = open_state(rt, incident_id)
    ledger = rt.view.ledger(incident_id)
    return incident_view(state, rt.view.folds.control, ledger[-1] if ledger else None)


def _read_runbook(rt: Runtime, name: str) -> tuple[bytes, str]:
    base = FsPath(rt.settings.api.conn_runbooks_dir).resolve()
    for candidate in (name, f"{name}.yaml", f"{name}.yml"):
        path = (base / candidate).resolve()
        if path.parent == base and path.is_file():
            return path.read_bytes(), f"runbooks/{path.name}"
    raise ApiError(404, "not_found", f"no runbook named {name!r} in the runbooks directory")


@router.post(
    "/incidents/{incident_id}/authority",
    status_code=201,
    tags=["incidents"],
    responses={
        **ERRORS,
        201: {
            "model": AuthorityDeclaredAnswer,
            "description": "Declared: AuthorityDeclared (the first one, or a narrowing)",
        },
        202: {
            "model": AuthorityProposedAnswer,
            "description": "Proposed: it widens the boundary, a second person must approve",
        },
    },
)
async def declare_authority(
    incident_id: IncidentPath, body: DeclareAuthority, rt: RuntimeDep, me: CurrentUser
) -> JSONResponse:
    """Declare the authority boundary from a versioned runbook file (its SHA-256 is
    recorded); the caller holds the conn. During an incident the holder may only
    narrow it: a change that widens it becomes an AuthorityChangeProposed (202) that
    takes effect when a second commander or admin who does not hold the conn
    approves it (`.../authority/proposals/{id}/approve`)."""
    require_role(me, Role.COMMANDER, doing="declare authority")
    if (body.runbook is None) == (body.content is None):
        raise ApiError(422, "invalid_request", "give exactly one of 'runbook' or 'content'")
    if body.runbook is not None:
        content, source = _read_runbook(rt, body.runbook)
    else:
        if rt.settings.api.conn_env != "development":
            raise ApiError(
                422,
                "invalid_request",
                "inline authority content is accepted only in development: declare a "
                "versioned runbook from the runbooks directory by name",
            )
        assert body.content is not None
        content, source = body.content.encode(), body.source_file or "request"
    try:
        authority, digest = parse_authority(content, holder=me.id)
    except AuthorityFileError as exc:
        raise ApiError(422, "invalid_authority", f"invalid authority file: {exc}") from exc
    async with rt.locks[incident_id]:
        state = open_state(rt, incident_id)
        declared = new_event(
            AuthorityDeclared,
            incident_id=incident_id,
            payload=AuthorityDeclaredPayload(
                authority=authority, source_file=source, content_sha256=digest
            ),
            actor=me.actor(),
            producer=rt.producer.principal,
        )
        refusal = check_authority(state, declared)
        if refusal is None:
            written = await rt.append_and_fold(declared)
            metrics.CONTROL.labels(verb="declare_authority", outcome="accepted").inc()
            declared_answer = AuthorityDeclaredAnswer.model_validate(
                {
                    "incident_id": incident_id,
                    "status": "declared",
                    "authority": f"{authority.name}@{authority.version}",
                    "content_sha256": digest,
                    "source_file": source,
                    "holder": me.id,
                    **written,
                }
            )
            return JSONResponse(declared_answer.model_dump(mode="json"), status_code=201)
        if refusal.reason is not RefusalReason.AUTHORITY_WIDENING or state.authority is None:
            metrics.CONTROL.labels(verb="declare_authority", outcome=refusal.reason.value).inc()
            raise ApiError.refused(refusal.reason, refusal.detail)
        assert state.authority_sha256 is not None
        wider = widenings(state.authority, authority)
        proposal = new_event(
            AuthorityChangeProposed,
            incident_id=incident_id,
            payload=AuthorityChangeProposedPayload(
                proposal_id=f"ap-{uuid.uuid4().hex[:12]}",
                authority=authority,
                source_file=source,
                content_sha256=digest,
                base_sha256=state.authority_sha256,
                widenings=bounded_lines(wider),
                detail=body.detail,
            ),
            actor=me.actor(),
            producer=PRODUCER,
        )
        refusal = check_authority(state, proposal)
        if refusal is not None:
            metrics.CONTROL.labels(verb="propose_authority", outcome=refusal.reason.value).inc()
            raise ApiError.refused(refusal.reason, refusal.detail)
        written = await rt.append_and_fold(proposal)
    metrics.CONTROL.labels(verb="propose_authority", outcome="accepted").inc()
    log.info(
        "authority change proposed",
        extra={"incident_id": incident_id, "actor": me.id, "widenings": len(wider)},
    )
    proposed = AuthorityProposedAnswer.model_validate(
        {
            "incident_id": incident_id,
            "status": "proposed",
            "proposal_id": proposal.payload.proposal_id,
            "authority": f"{authority.name}@{authority.version}",
            "content_sha256": digest,
            "source_file": source,
            "widenings": wider,
            "needs": "approval by a second commander or admin who does not hold the conn",
            **written,
        }
    )
    return JSONResponse(proposed.model_dump(mode="json"), status_code=202)


@router.get(
    "/incidents/{incident_id}/authority",
    tags=["incidents"],
    responses=ERRORS,
    response_model=AuthorityAnswer,
)
async def get_authority(
    incident_id: IncidentPath, rt: RuntimeDep, _me: CurrentUser
) -> AuthorityAnswer:
    """The authority in force (name, version, SHA-256, holder, file) and proposed changes."""
    state = open_state(rt, incident_id)
    return AuthorityAnswer.model_validate(
        {"incident_id": incident_id, "authority": authority_json(state)}
    )


ProposalPath = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


@router.post(
    "/incidents/{incident_id}/authority/proposals/{proposal_id}/approve",
    tags=["incidents"],
    responses=ERRORS,
    response_model=AuthorityApprovedAnswer,
)
async def approve_authority(
    incident_id: IncidentPath,
    proposal_id: ProposalPath,
    body: ApproveAuthority,
    rt: RuntimeDep,
    me: CurrentUser,
) -> AuthorityApprovedAnswer:
    """Approve a proposed authority change (a commander or admin who neither holds the
    conn nor proposed it), naming the exact content hash reviewed. The approval and
    the declaration it allows are both recorded in the ledger."""
    require_role(me, Role.COMMANDER, Role.ADMIN, doing="approve authority changes")
    async with rt.locks[incident_id]:
        state = open_state(rt, incident_id)
        proposal = state.authority_proposals.get(proposal_id)
        if proposal is None:
            raise ApiError(404, "not_found", f"no authority proposal {proposal_id}")
        approval = new_event(
            AuthorityChangeApproved,
            incident_id=incident_id,
            payload=AuthorityChangeApprovedPayload(
                proposal_id=proposal_id, content_sha256=body.content_sha256, detail=body.detail
            ),
            actor=me.actor(),
            producer=PRODUCER,
        )
        refusal = check_authority(state, approval)
        if refusal is not None:
            metrics.CONTROL.labels(verb="approve_authority", outcome=refusal.reason.value).inc()
            raise ApiError.refused(refusal.reason, refusal.detail)
        approved = await rt.append_and_fold(approval)
        declared = new_event(
            AuthorityDeclared,
            incident_id=incident_id,
            payload=AuthorityDeclaredPayload(
                authority=proposal.authority,
                source_file=proposal.source_file,
                content_sha256=proposal.content_sha256,
                approval=proposal_id,
            ),
            actor=me.actor(),
            producer=PRODUCER,
        )
        written = await rt.append_and_fold(declared)
        if written["folded"] and rt.view.state(incident_id).authority_sha256 != (
            proposal.content_sha256
        ):
            raise ApiError(
                409, "conflict", "the approved change was not applied: re-read the authority"
            )
    metrics.CONTROL.labels(verb="approve_authority", outcome="accepted").inc()
    log.info(
        "authority change approved",
        extra={"incident_id": incident_id, "actor": me.id, "proposal_id": proposal_id},
    )
    return AuthorityApprovedAnswer.model_validate(
        {
            "incident_id": incident_id,
            "status": "declared",
            "proposal_id": proposal_id,
            "approved_by": me.id,
            "authority": f"{proposal.authority.name}@{proposal.authority.version}",
            "content_sha256": proposal.content_sha256,
            "approval_event_id": approved["event_id"],
            **written,
        }
    )
