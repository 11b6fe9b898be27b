"""Control verbs: hold, resume, handoff, accept a takeover, close; the global kill
switch."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter

from conn_api import metrics
from conn_api.api.common import (
    ERRORS,
    IncidentPath,
    open_state,
)
from conn_api.deps import CurrentUser, RuntimeDep, require_role
from conn_api.errors import ApiError
from conn_api.models import (
    AcceptTakeover,
    CloseIncident,
    HandoffRequest,
    HoldRequest,
    KillSwitchRequest,
    ResumeRequest,
)
from conn_api.responses import (
    ControlAnswer,
    ControlView,
    KillSwitchAnswer,
)
from conn_api.runtime import OUTCOME_UNKNOWN, PRODUCER, Runtime
from conn_core.rules import ControlEvent, check_control
from conn_runtime.stops import GLOBAL_SCOPE, set_stop
from conn_schemas.events import (
    GLOBAL_INCIDENT,
    HoldDeclared,
    HoldDeclaredPayload,
    IncidentClosed,
    IncidentClosedPayload,
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
    HoldReason,
    RefusalReason,
    Role,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


# --- control verbs ---------------------------------------------------------------------


async def _control(rt: Runtime, incident_id: str, event: ControlEvent, verb: str) -> ControlAnswer:
    state = open_state(rt, incident_id)
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
        state = open_state(rt, incident_id)
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
async def get_control(rt: RuntimeDep, _me: CurrentUser) -> ControlView:
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
