"""Alert intake: Alertmanager and PagerDuty v3 webhooks -> AlertReceived.

An alert opens an incident (IncidentOpened) or attaches to the open incident of
its service. Repeats of a fingerprint with the same status inside the dedup
window are folded (counted in PostgreSQL, reported as `duplicates_folded` on the
next AlertReceived) rather than re-appended. An alert never causes an action.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from conn_api import metrics
from conn_api.deps import CurrentUser, RuntimeDep, require_role
from conn_api.errors import ApiError
from conn_api.models import AlertmanagerWebhook
from conn_api.responses import AlertIntakeAnswer
from conn_api.routes import ERRORS, new_incident_id
from conn_api.runtime import Runtime
from conn_api.store import (
    AlertSeen,
    IntakeBusy,
    alert_appended,
    alert_incidents_since,
    claim_delivery,
    finish_delivery,
    intake_lock,
    observe_alert,
)
from conn_core.chain import sha256_json
from conn_schemas.events import (
    AlertReceived,
    AlertReceivedPayload,
    IncidentClosed,
    IncidentOpened,
    IncidentOpenedPayload,
    new_event,
)
from conn_schemas.values import (
    MAX_LABELS,
    MAX_LINE,
    Actor,
    Role,
    clean_text,
    fit_identifier,
    fit_token,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

_SEVERITY = {
    "critical": "sev1",
    "page": "sev1",
    "high": "sev2",
    "error": "sev2",
    "major": "sev2",
    "warning": "sev3",
    "low": "sev4",
    "info": "sev4",
}


def service_name(raw: str | None) -> str:
    """A label value made into a valid Identifier (no spaces, dots or free text)."""
    return fit_identifier(raw)


def _severity(raw: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "", raw)[:32] or "unknown"


LEFT_OUT_LABEL = "conn_labels_left_out"
_FIRST = ("alertname", "service", "severity", "job")


def _labels(raw: dict[str, str]) -> dict[str, str]:
    """Alert labels as the contract carries them: valid names, one-line bounded values,
    at most MAX_LABELS. Past that (or a name that is not a label name), what is left
    out is counted in the label `conn_labels_left_out`: never cut silently."""
    valid = {
        key: clean_text(str(value), MAX_LINE)
        for key, value in raw.items()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", key)
    }
    invalid = len(raw) - len(valid)
    if len(valid) + (1 if invalid else 0) <= MAX_LABELS:
        out = valid
    else:
        order = [k for k in _FIRST if k in valid] + [k for k in valid if k not in _FIRST]
        out = {k: valid[k] for k in order[: MAX_LABELS - 1]}
    left_out = len(raw) - len(out)
    if left_out:
        out[LEFT_OUT_LABEL] = str(left_out)
    return out


@dataclass(frozen=True)
class NormalizedAlert:
    source: Literal["alertmanager", "pagerduty"]
    fingerprint: str
    service: str
    status: Literal["firing", "resolved"]
    severity: str
    summary: str
    labels: dict[str, str]
    starts_at: datetime | None


def _parse_time(raw: str | None) -> datetime | None:
    if not raw or raw.startswith("0001-"):
        return None
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def from_alertmanager(hook: AlertmanagerWebhook) -> list[NormalizedAlert]:
    out = []
    for a in hook.alerts:
        labels = {**hook.commonLabels, **a.labels}
        fingerprint = a.fingerprint or sha256_json(labels)[:16]
        out.append(
            NormalizedAlert(
                source="alertmanager",
                fingerprint=fit_token(fingerprint),
                service=service_name(
                    labels.get("service") or labels.get("job") or labels.get("alertname")
                ),
                status=a.status,
                severity=_severity(labels.get("severity", "unknown")),
                summary=clean_text(
                    a.annotations.get("summary")
                    or a.annotations.get("description")
                    or labels.get("alertname", ""),
                    MAX_LINE,
                ),
                labels=_labels(labels),
                starts_at=_parse_time(a.startsAt),
            )
        )
    return out


def parse_pagerduty(raw: bytes) -> tuple[dict[str, Any], NormalizedAlert | None]:
    """The webhook body (a JSON object) and its alert; ValueError/ValidationError if malformed."""
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body, from_pagerduty(body)


def from_pagerduty(body: dict[str, Any]) -> NormalizedAlert | None:
    """PagerDuty v3 webhook (event.event_type incident.*). Other events are ignored."""
    event = body.get("event")
    if not isinstance(event, dict):
        raise ValueError("missing 'event' object")
    event_type = str(event.get("event_type", ""))
    data = event.get("data")
    if not event_type.startswith("incident.") or not isinstance(data, dict):
        return None
    service = data.get("service") if isinstance(data.get("service"), dict) else {}
    assert isinstance(service, dict)
    incident_id = data.get("id")
    if not isinstance(incident_id, str) or not incident_id:
        # Not the event id instead: it names this delivery's event, not the incident,
        # so a later resolve could never meet the alert it resolves.
        raise ValueError("event.data.id (the PagerDuty incident id) is missing")
    fingerprint = str(data.get("incident_key") or incident_id)
    status: Literal["firing", "resolved"] = (
        "resolved"
        if event_type == "incident.resolved" or data.get("status") == "resolved"
        else "firing"
    )
    return NormalizedAlert(
        source="pagerduty",
        fingerprint=fit_token(fingerprint),
        service=service_name(str(service.get("summary") or service.get("id") or "")),
        status=status,
        severity=_severity(str(data.get("urgency") or "unknown")),
        summary=clean_text(str(data.get("title") or ""), MAX_LINE),
        labels=_labels({"pagerduty_event": event_type, "pagerduty_id": str(data.get("id", ""))}),
        starts_at=_parse_time(str(data.get("created_at") or "")),
    )


def verify_pagerduty_signature(secret: str, body: bytes, header: str | None) -> bool:
    """X-PagerDuty-Signature: 'v1=<hex hmac-sha256>' (possibly several, comma-separated)."""
    if not header:
        return False
    expected = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(sig.strip(), expected) for sig in header.split(","))


INTAKE_LOCK_WAIT_SECONDS = 10.0
"""How long an intake waits for another replica's (else 503 + Retry-After)."""
FOLD_LAG_SECONDS = 300.0
"""How long an incident another replica opened for an alert may be unknown to our fold
and still be taken as open (a fold lags by milliseconds; this is generous)."""


def _just_opened_elsewhere(rt: Runtime, incident_id: str) -> bool:
    """Not in our fold at all (not opened, not closed): another replica opened it."""
    state = rt.view.state(incident_id)
    return not state.opened and not state.closed


def _still_open(rt: Runtime, incident_id: str, appended_at: datetime | None, now: datetime) -> bool:
    state = rt.view.state(incident_id)
    if state.opened:
        return not state.closed
    return (
        _just_opened_elsewhere(rt, incident_id)
        and appended_at is not None
        and (now - appended_at).total_seconds() < FOLD_LAG_SECONDS
    )


async def _incident_for(rt: Runtime, service: str, now: datetime) -> str | None:
    """The open incident of the service: in our fold, or opened for one of its alerts
    by another replica and not in our fold yet."""
    found = _open_incident_for(rt, service)
    if found is not None:
        return found
    recent = await alert_incidents_since(
        rt.db, service=service, since=now - timedelta(seconds=FOLD_LAG_SECONDS)
    )
    return next((i for i in recent if _just_opened_elsewhere(rt, i)), None)


def _open_incident_for(rt: Runtime, service: str) -> str | None:
    candidates = [
        s
        for s in rt.view.folds.states.values()
        if s.opened and not s.closed and s.service == service
    ]
    if not candidates:
        return None
    candidates.sort(key=lambda s: s.opened_at or datetime.min.replace(tzinfo=UTC))
    return candidates[-1].incident_id


def _after_close(rt: Runtime, alert: NormalizedAlert, seen: AlertSeen) -> str | None:
    """The closed incident this alert belongs to, if any: the incident its fingerprint
    was recorded in is closed, and this is the same alert (a PagerDuty incident is one
    incident whatever its later events; an Alertmanager alert is the same occurrence
    while its startsAt is). A new occurrence after a close is a new alert."""
    if seen.incident_id is None:
        return None
    state = rt.view.state(seen.incident_id)
    if not state.closed:
        return None
    if alert.source == "pagerduty" or seen.same_occurrence:
        return seen.incident_id
    return None


def _recorded_since_close(rt: Runtime, incident_id: str, fingerprint: str) -> bool:
    """Has this alert been recorded in the incident since it was closed?"""
    for entry in reversed(rt.view.ledger(incident_id)):
        event = entry.event
        if isinstance(event, IncidentClosed):
            return False
        if isinstance(event, AlertReceived) and event.payload.fingerprint == fingerprint:
            return True
    return False


async def intake(rt: Runtime, alerts: list[NormalizedAlert], actor: Actor) -> dict[str, Any]:
    """Alerts one at a time, in this process (alert_lock) and across replicas (a lock in
    PostgreSQL): an alert is decided on knowing every alert recorded before it."""
    try:
        async with (
            rt.alert_lock,
            intake_lock(rt.db, wait_seconds=INTAKE_LOCK_WAIT_SECONDS),
        ):
            return await _intake(rt, alerts, actor)
    except IntakeBusy as exc:
        raise ApiError(
            503,
            "busy",
            "another API replica is taking in alerts; nothing was recorded: retry",
            {"appended": False},
            headers={"Retry-After": "1"},
        ) from exc


async def _intake(rt: Runtime, alerts: list[NormalizedAlert], actor: Actor) -> dict[str, Any]:
    appended = folded = ignored = after_close = 0
    incidents: list[str] = []
    for alert in alerts:
        now = datetime.now(UTC)
        seen = await observe_alert(
            rt.db,
            fingerprint=alert.fingerprint,
            source=alert.source,
            service=alert.service,
            status=alert.status,
            now=now,
            window_seconds=rt.settings.api.conn_alert_dedup_window_seconds,
            occurrence=alert.starts_at.isoformat() if alert.starts_at else None,
        )
        attached = seen.incident_id
        closed = _after_close(rt, alert, seen)
        if (
            seen.duplicate
            and attached is not None
            and (
                _still_open(rt, attached, seen.appended_at, now)
                or (closed is not None and _recorded_since_close(rt, closed, alert.fingerprint))
            )
        ):
            folded += 1
            metrics.ALERTS.labels(source=alert.source, outcome="folded").inc()
            incidents.append(attached)
            continue
        opened: IncidentOpened | None = None
        if closed is not None:
            # Recorded in the closed incident's ledger for the commander to see;
            # nothing is opened or re-opened (opening a new incident is theirs).
            incident_id = closed
            labels = {**alert.labels, "conn_after_close": "true"}
        else:
            labels = alert.labels
            found = await _incident_for(rt, alert.service, now)
            if found is None and alert.status == "resolved":
                ignored += 1
                metrics.ALERTS.labels(source=alert.source, outcome="ignored").inc()
                continue
            if found is None:
                incident_id = new_incident_id()
                opened = new_event(
                    IncidentOpened,
                    incident_id=incident_id,
                    payload=IncidentOpenedPayload(
                        title=clean_text(alert.summary or f"{alert.service} alert", MAX_LINE),
                        service=alert.service,
                        severity=_SEVERITY.get(alert.severity.lower(), "sev2"),
                        opened_from_alert=alert.fingerprint,
                    ),
                    actor=actor,
                    producer=rt.producer.principal,
                )
            else:
                incident_id = found
        # Both events are built (validated) before either is appended: an alert the
        # contract refuses opens nothing.
        event = new_event(
            AlertReceived,
            incident_id=incident_id,
            payload=AlertReceivedPayload(
                source=alert.source,
                fingerprint=alert.fingerprint,
                service=alert.service,
                status=alert.status,
                severity=alert.severity,
                summary=alert.summary,
                labels=labels,
                starts_at=alert.starts_at,
                duplicates_folded=seen.folded_since,
            ),
            actor=actor,
            producer=rt.producer.principal,
        )
        if opened is not None:
            await rt.append_and_fold(opened)
            log.info(
                "incident opened from alert",
                extra={"incident_id": incident_id, "fingerprint": alert.fingerprint},
            )
        await rt.append_and_fold(event)
        await alert_appended(rt.db, fingerprint=alert.fingerprint, incident_id=incident_id, now=now)
        if closed is not None:
            after_close += 1
            metrics.ALERTS.labels(source=alert.source, outcome="after_close").inc()
        else:
            appended += 1
            metrics.ALERTS.labels(source=alert.source, outcome="appended").inc()
        incidents.append(incident_id)
    return {
        "received": len(alerts),
        "appended": appended,
        "folded": folded,
        "ignored": ignored,
        "recorded_after_close": after_close,
        "incidents": sorted(set(incidents)),
    }


@router.post(
    "/alertmanager",
    responses=ERRORS,
    response_model=AlertIntakeAnswer,
    response_model_exclude_unset=True,
)
async def alertmanager_webhook(
    hook: AlertmanagerWebhook, rt: RuntimeDep, me: CurrentUser
) -> AlertIntakeAnswer:
    """Alertmanager webhook receiver (bearer token of an integration identity)."""
    require_role(me, Role.INTEGRATION, Role.ADMIN, doing="post alerts")
    actor = Actor(kind="service", id=me.id, roles=me.roles, team=me.team)
    return AlertIntakeAnswer.model_validate(await intake(rt, from_alertmanager(hook), actor))


@router.post(
    "/pagerduty",
    responses=ERRORS,
    response_model=AlertIntakeAnswer,
    response_model_exclude_unset=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def pagerduty_webhook(
    request: Request,
    rt: RuntimeDep,
    signature: Annotated[str | None, Header(alias="X-PagerDuty-Signature", max_length=2000)] = None,
    webhook_id: Annotated[str | None, Header(alias="X-Webhook-Id", max_length=200)] = None,
) -> AlertIntakeAnswer:
    """PagerDuty v3 webhook, authenticated by its HMAC-SHA256 signature."""
    raw = await request.body()
    secret = rt.settings.api.conn_pagerduty_webhook_secret
    if not secret or not verify_pagerduty_signature(secret, raw, signature):
        raise ApiError(401, "unauthorized", "missing or invalid X-PagerDuty-Signature")
    try:
        body, alert = parse_pagerduty(raw)
    except (ValueError, ValidationError) as exc:
        raise ApiError(422, "invalid_request", f"not a PagerDuty v3 webhook: {exc}") from exc
    keys = delivery_keys(webhook_id, body)
    if not keys:
        return AlertIntakeAnswer.model_validate(await _pagerduty_intake(rt, alert))
    delivery = await claim_delivery(
        rt.db,
        source="pagerduty",
        keys=keys,
        now=datetime.now(UTC),
        window_seconds=rt.settings.api.conn_webhook_delivery_window_seconds,
    )
    if not delivery.new:
        if not delivery.done:
            raise ApiError(
                409,
                "delivery_in_progress",
                "this delivery is being processed; retry",
                {"keys": keys},
                headers={"Retry-After": "5"},
            )
        metrics.ALERTS.labels(source="pagerduty", outcome="replayed_delivery").inc()
        return AlertIntakeAnswer.model_validate({**_NOTHING, "duplicate_delivery": True})
    ok = False
    try:
        answer = AlertIntakeAnswer.model_validate(await _pagerduty_intake(rt, alert))
        ok = True
        return answer
    finally:
        await asyncio.shield(finish_delivery(rt.db, source="pagerduty", keys=keys, ok=ok))


_NOTHING: dict[str, Any] = {
    "received": 0,
    "appended": 0,
    "folded": 0,
    "ignored": 0,
    "recorded_after_close": 0,
    "incidents": [],
}


async def _pagerduty_intake(rt: Runtime, alert: NormalizedAlert | None) -> dict[str, Any]:
    if alert is None:
        return {**_NOTHING, "ignored": 1}
    return await intake(rt, [alert], Actor.service("pagerduty"))


def delivery_keys(webhook_id: str | None, body: dict[str, Any]) -> list[str]:
    """What identifies a PagerDuty delivery: the X-Webhook-Id header (the same on every
    retry of a delivery) and the event id (the same in every delivery of an event)."""
    keys = []
    if webhook_id:
        keys.append(f"webhook:{webhook_id[:200]}")
    event = body.get("event")
    event_id = event.get("id") if isinstance(event, dict) else None
    if isinstance(event_id, str) and event_id:
        keys.append(f"event:{event_id[:200]}")
    return keys
