"""HTTP routes: incidents, authority, directives, control verbs and reads."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from conn_api import directives, metrics
from conn_api.deps import CurrentUser, RuntimeDep, require_role
from conn_api.disclosure import for_reader, ledger_items, privileged
from conn_api.errors import ApiError, ErrorResponse
from conn_api.models import (
    AcceptTakeover,
    ApproveAuthority,
    CloseIncident,
    DeclareAuthority,
    HandoffRequest,
    HoldRequest,
    KillSwitchRequest,
    OpenIncident,
    ResumeRequest,
)
from conn_api.packets import packet_for
from conn_api.present import (
    authority_json,
    decision_packet,
    directive_json,
    incident_view,
    summary_view,
)
from conn_api.responses import (
    AuthorityAnswer,
    AuthorityApprovedAnswer,
    AuthorityDeclaredAnswer,
    AuthorityProposedAnswer,
    ControlAnswer,
    ControlView,
    DecisionPacketView,
    DirectiveIssuedAnswer,
    DirectiveList,
    DirectiveView,
    IncidentList,
    IncidentOpenedAnswer,
    IncidentView,
    KillSwitchAnswer,
    LedgerPage,
    Me,
    PacketAnswer,
)
from conn_api.runtime import OUTCOME_UNKNOWN, PRODUCER, Runtime
from conn_core.authority import AuthorityFileError, parse_authority, widenings
from conn_core.rules import ControlEvent, check_authority, check_control
from conn_core.state import IncidentState
from conn_runtime.stops import GLOBAL_SCOPE, set_stop
from conn_schemas.events import (
    GLOBAL_INCIDENT,
    AuthorityChangeApproved,
    AuthorityChangeApprovedPayload,
    AuthorityChangeProposed,
    AuthorityChangeProposedPayload,
    AuthorityDeclared,
    AuthorityDeclaredPayload,
    HoldDeclared,
    HoldDeclaredPayload,
    IncidentClosed,
    IncidentClosedPayload,
    IncidentOpened,
    IncidentOpenedPayload,
    KillSwitchEngaged,
    KillSwitchEngagedPayload,
    KillSwitchReleased,
    KillSwitchReleasedPayload,
    ResumeDirected,
    ResumeDirectedPayload,
    TakeoverAccepted,
    TakeoverAcceptedPayload,
    TakeoverRequested,
    TakeoverRequestedPayload,
    new_event,
)
from conn_schemas.values import (
    INCIDENT_ID_PATTERN,
    HoldReason,
    IncidentId,
    RefusalReason,
    Role,
    bounded_lines,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")

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


def _open_state(rt: Runtime, incident_id: str) -> IncidentState:
    state = rt.view.state(incident_id)
    if not state.opened:
        raise ApiError.refused(
            RefusalReason.INCIDENT_NOT_OPEN, f"incident {incident_id} is not open"
        )
    return state


def _head(rt: Runtime, incident_id: str) -> dict[str, Any] | None:
    ledger = rt.view.ledger(incident_id)
    return {"sequence": ledger[-1].sequence, "hash": ledger[-1].hash} if ledger else None


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
    me: CurrentUser,
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
async def get_incident(incident_id: IncidentPath, rt: RuntimeDep, me: CurrentUser) -> IncidentView:
    """The bridge state (the contract's BridgeState, schemas/json/BridgeState.schema.json)
    from this service's fold of the log, plus the kill switch, health ages relative to
    now and every directive."""
    state = _open_state(rt, incident_id)
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
        state = _open_state(rt, incident_id)
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
    incident_id: IncidentPath, rt: RuntimeDep, me: CurrentUser
) -> AuthorityAnswer:
    """The authority in force (name, version, SHA-256, holder, file) and proposed changes."""
    state = _open_state(rt, incident_id)
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
        state = _open_state(rt, incident_id)
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
    state = _open_state(rt, incident_id)
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
    state = _open_state(rt, incident_id)
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
    state = _open_state(rt, incident_id)
    record = state.directives.get(correlation_id)
    if record is None:
        raise ApiError(404, "not_found", f"no directive {correlation_id} in {incident_id}")
    packet = decision_packet(state, record, rt.view.ledger(incident_id), rt.view.folds.control)
    return DecisionPacketView.model_validate(for_reader(me, packet))


# --- control verbs ---------------------------------------------------------------------


async def _control(rt: Runtime, incident_id: str, event: ControlEvent, verb: str) -> ControlAnswer:
    state = _open_state(rt, incident_id)
    refusal = check_control(state, event)
    if refusal is not None:
        metrics.CONTROL.labels(verb=verb, outcome=refusal.reason.value).inc()
        raise ApiError.refused(refusal.reason, refusal.detail)
    if isinstance(event, HoldDeclared):
        # The fast stop first: the executor checks it right before every side effect.
        await set_stop(
            rt.db,
            incident_id,
            engaged=True,
            reason=event.payload.detail or "manual hold",
            changed_by=event.actor.id,
            changed_at=event.occurred_at,
            event_id=str(event.event_id),
        )
        try:
            written = await rt.append_and_fold(event)
        except ApiError as exc:
            # Outcome unknown: the hold may be in the log, so the stop stays (fail safe).
            if exc.code != OUTCOME_UNKNOWN and not rt.view.state(incident_id).on_hold:
                await set_stop(
                    rt.db,
                    incident_id,
                    engaged=False,
                    reason="hold not recorded",
                    changed_by=PRODUCER,
                    changed_at=datetime.now(UTC),
                )
            raise
    else:
        written = await rt.append_and_fold(event)
        if isinstance(event, ResumeDirected | TakeoverAccepted):
            await set_stop(
                rt.db,
                incident_id,
                engaged=False,
                reason=verb,
                changed_by=event.actor.id,
                changed_at=event.occurred_at,
                event_id=str(event.event_id),
            )
    metrics.CONTROL.labels(verb=verb, outcome="accepted").inc()
    log.info(
        "control verb", extra={"verb": verb, "incident_id": incident_id, "actor": event.actor.id}
    )
    after = rt.view.state(incident_id)
    return ControlAnswer.model_validate(
        {
            "incident_id": incident_id,
            "verb": verb,
            "holder": after.holder.identity if after.holder else None,
            "on_hold": after.on_hold,
            **written,
        }
    )


@router.post(
    "/incidents/{incident_id}/hold",
    tags=["control"],
    responses=ERRORS,
    response_model=ControlAnswer,
    response_model_exclude_unset=True,
)
async def hold(
    incident_id: IncidentPath, body: HoldRequest, rt: RuntimeDep, me: CurrentUser
) -> ControlAnswer:
    """Stop new side effects for this incident (HoldDeclared + the PostgreSQL stop)."""
    async with rt.locks[incident_id]:
        event = new_event(
            HoldDeclared,
            incident_id=incident_id,
            payload=HoldDeclaredPayload(reason=HoldReason(body.reason), detail=body.detail),
            actor=me.actor(),
            producer=rt.producer.principal,
        )
        return await _control(rt, incident_id, event, "hold")


@router.post(
    "/incidents/{incident_id}/resume",
    tags=["control"],
    responses=ERRORS,
    response_model=ControlAnswer,
    response_model_exclude_unset=True,
)
async def resume(
    incident_id: IncidentPath, body: ResumeRequest, rt: RuntimeDep, me: CurrentUser
) -> ControlAnswer:
    """Lift the hold (holder only): ResumeDirected, and clear the stop."""
    async with rt.locks[incident_id]:
        event = new_event(
            ResumeDirected,
            incident_id=incident_id,
            payload=ResumeDirectedPayload(detail=body.detail),
            actor=me.actor(),
            producer=rt.producer.principal,
        )
        return await _control(rt, incident_id, event, "resume")


@router.post(
    "/incidents/{incident_id}/handoff",
    tags=["control"],
    responses=ERRORS,
    response_model=ControlAnswer,
    response_model_exclude_unset=True,
)
async def handoff(
    incident_id: IncidentPath, body: HandoffRequest, rt: RuntimeDep, me: CurrentUser
) -> ControlAnswer:
    """Ask a named team to take over (TakeoverRequested); the packager publishes a packet."""
    async with rt.locks[incident_id]:
        event = new_event(
            TakeoverRequested,
            incident_id=incident_id,
            payload=TakeoverRequestedPayload(to_team=body.to_team, detail=body.detail),
            actor=me.actor(),
            producer=rt.producer.principal,
        )
        return await _control(rt, incident_id, event, "handoff")


@router.post(
    "/incidents/{incident_id}/takeover",
    tags=["control"],
    responses=ERRORS,
    response_model=ControlAnswer,
    response_model_exclude_unset=True,
)
async def accept_takeover(
    incident_id: IncidentPath, body: AcceptTakeover, rt: RuntimeDep, me: CurrentUser
) -> ControlAnswer:
    """Accept the takeover packet explicitly, naming its exact hash (a specialist of the
    addressed team): the conn moves. Refused if the packet is not the current one (a
    newer packet exists, or the incident changed since: a newer one is due)."""
    team = body.team or me.team
    if team is None:
        raise ApiError(422, "invalid_request", "no team given and the caller has no team")
    async with rt.locks[incident_id]:
        await rt.view.wait_current(incident_id, 1.0)
        event = new_event(
            TakeoverAccepted,
            incident_id=incident_id,
            payload=TakeoverAcceptedPayload(
                team=team, packet_sha256=body.packet_sha256, detail=body.detail
            ),
            actor=me.actor(),
            producer=rt.producer.principal,
        )
        return await _control(rt, incident_id, event, "accept_takeover")


@router.post(
    "/incidents/{incident_id}/close",
    tags=["control"],
    responses=ERRORS,
    response_model=ControlAnswer,
    response_model_exclude_unset=True,
)
async def close_incident(
    incident_id: IncidentPath, body: CloseIncident, rt: RuntimeDep, me: CurrentUser
) -> ControlAnswer:
    """Close the incident (the holder of the conn, or an admin)."""
    async with rt.locks[incident_id]:
        state = _open_state(rt, incident_id)
        if state.closed:
            raise ApiError.refused(
                RefusalReason.INCIDENT_CLOSED, f"incident {incident_id} is closed"
            )
        is_holder = state.holder is not None and state.holder.identity == me.id
        no_holder_commander = state.holder is None and me.has(Role.COMMANDER)
        if not (is_holder or no_holder_commander or me.has(Role.ADMIN)):
            raise ApiError.refused(
                RefusalReason.NOT_CONN_HOLDER,
                f"{me.id} may not close {incident_id}: only the holder of the conn or an admin",
            )
        event = new_event(
            IncidentClosed,
            incident_id=incident_id,
            payload=IncidentClosedPayload(resolution=body.resolution),
            actor=me.actor(),
            producer=rt.producer.principal,
        )
        # A closed incident is stopped for good: the stop is committed before the
        # close is answered, so no side effect can pass the executor's gate after it.
        await set_stop(
            rt.db,
            incident_id,
            engaged=True,
            reason=f"incident closed: {body.resolution[:200]}",
            changed_by=me.id,
            changed_at=event.occurred_at,
            event_id=str(event.event_id),
        )
        try:
            written = await rt.append_and_fold(event)
        except ApiError as exc:
            if exc.code != OUTCOME_UNKNOWN and not rt.view.state(incident_id).closed:
                await set_stop(
                    rt.db,
                    incident_id,
                    engaged=False,
                    reason="close not recorded",
                    changed_by=PRODUCER,
                    changed_at=datetime.now(UTC),
                )
            raise
    metrics.CONTROL.labels(verb="close", outcome="accepted").inc()
    return ControlAnswer.model_validate({"incident_id": incident_id, "verb": "close", **written})


@router.get("/control", tags=["control"], responses=ERRORS, response_model=ControlView)
async def get_control(rt: RuntimeDep, me: CurrentUser) -> ControlView:
    """The global kill switch."""
    c = rt.view.folds.control
    return ControlView(
        kill_switch=c.kill_switch,
        reason=c.reason,
        changed_at=c.changed_at.isoformat() if c.changed_at else None,
        changed_by=c.changed_by,
    )


async def _kill_switch(rt: Runtime, me: CurrentUser, engage: bool, reason: str) -> KillSwitchAnswer:
    require_role(me, Role.ADMIN, doing="operate the kill switch")
    verb = "kill_switch_on" if engage else "kill_switch_off"
    async with rt.locks[GLOBAL_INCIDENT]:
        control = rt.view.folds.control
        if not engage and not control.kill_switch:
            metrics.CONTROL.labels(verb=verb, outcome="not_engaged").inc()
            raise ApiError(409, "conflict", "the kill switch is not engaged")
        event = (
            new_event(
                KillSwitchEngaged,
                incident_id=GLOBAL_INCIDENT,
                payload=KillSwitchEngagedPayload(reason=reason),
                actor=me.actor(),
                producer=rt.producer.principal,
            )
            if engage
            else new_event(
                KillSwitchReleased,
                incident_id=GLOBAL_INCIDENT,
                payload=KillSwitchReleasedPayload(reason=reason),
                actor=me.actor(),
                producer=rt.producer.principal,
            )
        )
        if engage:
            await set_stop(
                rt.db,
                GLOBAL_SCOPE,
                engaged=True,
                reason=reason,
                changed_by=me.id,
                changed_at=event.occurred_at,
                event_id=str(event.event_id),
            )
        written = await rt.append_and_fold(event, topic=rt.view.topics.control)
        if not engage:
            await set_stop(
                rt.db,
                GLOBAL_SCOPE,
                engaged=False,
                reason=reason,
                changed_by=me.id,
                changed_at=event.occurred_at,
                event_id=str(event.event_id),
            )
    metrics.CONTROL.labels(verb=verb, outcome="accepted").inc()
    log.warning("kill switch", extra={"engaged": engage, "actor": me.id, "reason": reason})
    return KillSwitchAnswer.model_validate({"kill_switch": engage, "reason": reason, **written})


@router.post(
    "/kill-switch/engage", tags=["control"], responses=ERRORS, response_model=KillSwitchAnswer
)
async def kill_switch_on(
    body: KillSwitchRequest, rt: RuntimeDep, me: CurrentUser
) -> KillSwitchAnswer:
    """Global kill switch on (admin): KillSwitchEngaged on conn.control + the global stop."""
    return await _kill_switch(rt, me, True, body.reason)


@router.post(
    "/kill-switch/release", tags=["control"], responses=ERRORS, response_model=KillSwitchAnswer
)
async def kill_switch_off(
    body: KillSwitchRequest, rt: RuntimeDep, me: CurrentUser
) -> KillSwitchAnswer:
    """Global kill switch off (admin)."""
    return await _kill_switch(rt, me, False, body.reason)


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
    _open_state(rt, incident_id)
    view = "full" if privileged(me) else "redacted"
    ledger = rt.view.ledger(incident_id)
    head = _head(rt, incident_id)
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
async def get_packet(incident_id: IncidentPath, rt: RuntimeDep, me: CurrentUser) -> PacketAnswer:
    """The latest published takeover packet: its reference from the log, and its full
    content from the packager's read model (`source: "packager"`) when available."""
    state = _open_state(rt, incident_id)
    packet = await packet_for(rt, state)
    if packet is None:
        raise ApiError(404, "not_found", f"no takeover packet published for {incident_id}")
    return PacketAnswer.model_validate(packet)


@router.get("/me", tags=["reads"], responses=ERRORS, response_model=Me)
async def whoami(me: CurrentUser) -> Me:
    """Who the bearer token says you are."""
    return Me(id=me.id, roles=[r.value for r in me.roles], team=me.team, kind=me.kind, via=me.via)
