"""Alert intake: a REAL Alertmanager posting to the API process, and PagerDuty v3
webhooks with HMAC signatures. An alert opens (or attaches to) one incident per
service, repeats are folded and counted, and an alert never causes an action."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import orjson
from api_support import DEV_TOKENS, AlertmanagerFactory, Api, auth, of_incident, read_log
from fixtures_services import Proc
from prometheus_client.parser import text_string_to_metric_families

from conn_schemas.events import Envelope

T = TypeVar("T")

ACTION_EVENTS = {"DirectiveIssued", "DirectiveRefused", "ActionStarted", "ActionCompleted"}


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, within: float = 45.0
) -> T:
    """Poll `probe` until it returns something truthy (bounded; never a timing assert)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = await probe()
        if got:
            return got
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def _alert_metric(http: httpx.AsyncClient, api_url: str, outcome: str) -> float:
    text = (await http.get(api_url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "conn_api_alerts":
            for s in family.samples:
                if (
                    s.name == "conn_api_alerts_total"
                    and s.labels.get("source") == "alertmanager"
                    and s.labels.get("outcome") == outcome
                ):
                    return float(s.value)
    return 0.0


def _no_actions(events: list[Envelope]) -> None:
    acted = [e.event_type for e in events if e.event_type in ACTION_EVENTS]
    assert acted == [], f"an alert caused {acted}"


async def test_real_alertmanager_opens_one_incident_and_folds_repeats(
    api_process: Proc,
    alertmanager: AlertmanagerFactory,
    kafka_bootstrap: str,
    conn_topics: Any,
) -> None:
    am = alertmanager(api_process.url + "/v1/alerts/alertmanager", DEV_TOKENS["alertbot"])
    service = f"checkout-{uuid.uuid4().hex[:6]}"
    alert = {
        "labels": {
            "alertname": "CheckoutErrorRate",
            "service": service,
            "severity": "critical",
            "region": "eu-west",
        },
        "annotations": {"summary": "checkout 5xx above 5% in eu-west"},
        "generatorURL": "http://127.0.0.1/graph",
    }
    api = api_process.url
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(am.url + "/api/v2/alerts", json=[alert])
        assert r.status_code == 200, r.text
        am_alerts = (await http.get(am.url + "/api/v2/alerts")).json()
        assert len(am_alerts) == 1
        fingerprint = am_alerts[0]["fingerprint"]

        async def opened() -> list[dict[str, Any]] | None:
            r = await http.get(
                api + "/v1/incidents", params={"service": service}, headers=auth("olive")
            )
            assert r.status_code == 200, r.text
            return r.json()["items"] or None

        [incident] = await eventually(opened, "an incident opened by Alertmanager's webhook")
        incident_id = incident["incident_id"]

        # Alertmanager re-notifies every repeat_interval: those are folded, not re-appended.
        folded_first = await eventually(
            lambda: _alert_metric(http, api, "folded"), "a re-notification folded"
        )
        # The same alert pushed again: still the same incident, still folded.
        r = await http.post(am.url + "/api/v2/alerts", json=[alert])
        assert r.status_code == 200, r.text

        async def folded_more() -> float | None:
            n = await _alert_metric(http, api, "folded")
            return n if n >= folded_first + 2 else None

        folded_before_resolve = await eventually(folded_more, "more repeats folded")
        appended = await _alert_metric(http, api, "appended")
        assert appended == 1, appended

        # Resolve it: a status change is appended (with the fold count) to the same incident.
        resolved = {**alert, "endsAt": datetime.now(UTC).isoformat()}
        r = await http.post(am.url + "/api/v2/alerts", json=[resolved])
        assert r.status_code == 200, r.text

        async def resolved_received() -> list[Any] | None:
            events = await read_log(kafka_bootstrap, conn_topics.events)
            got = [
                e
                for e in of_incident(events, incident_id, "AlertReceived")
                if e.payload.status == "resolved"
            ]
            return got or None

        await eventually(resolved_received, "the resolved notification")
        state = (await http.get(f"{api}/v1/incidents/{incident_id}", headers=auth("olive"))).json()

    events = await read_log(kafka_bootstrap, conn_topics.events)
    opened_events = [
        e for e in events if e.event_type == "IncidentOpened" and e.payload.service == service
    ]
    assert len(opened_events) == 1, opened_events
    assert opened_events[0].incident_id == incident_id
    assert opened_events[0].payload.opened_from_alert == fingerprint
    assert opened_events[0].payload.severity == "sev1"

    received = of_incident(events, incident_id, "AlertReceived")
    assert [a.payload.status for a in received] == ["firing", "resolved"], received
    firing, resolved_event = received
    assert firing.payload.source == "alertmanager"
    assert firing.payload.fingerprint == fingerprint
    assert firing.payload.service == service
    assert firing.payload.labels["region"] == "eu-west"
    assert firing.payload.duplicates_folded == 0
    assert firing.actor.kind == "service" and firing.actor.id == "alertbot"
    assert resolved_event.payload.fingerprint == fingerprint
    assert resolved_event.payload.duplicates_folded >= folded_before_resolve
    # An alert never causes an action.
    _no_actions(events)
    assert state["open_step"] is None


# --- PagerDuty v3 ----------------------------------------------------------------------


def _pd_body(
    event_type: str = "incident.triggered", key: str = "pd-key-1", service: str = "Payments API"
) -> bytes:
    return orjson.dumps(
        {
            "event": {
                "id": f"01E{uuid.uuid4().hex[:10].upper()}",
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": "2026-11-22T10:00:00.000Z",
                "data": {
                    "id": "PGR0VU2",
                    "type": "incident",
                    "number": 2,
                    "status": "resolved" if event_type == "incident.resolved" else "triggered",
                    "incident_key": key,
                    "created_at": "2026-11-22T09:59:00Z",
                    "title": "Payments latency high",
                    "service": {"id": "PF9KMXH", "summary": service, "type": "service_reference"},
                    "urgency": "high",
                },
            }
        }
    )


def _sign(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _pd(api: Api, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-PagerDuty-Signature"] = signature
    return await api.client.post("/v1/alerts/pagerduty", content=body, headers=headers)


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code


async def test_pagerduty_signature_is_required(api: Api, kafka_bootstrap: str) -> None:
    secret = api.settings.api.conn_pagerduty_webhook_secret
    body = _pd_body()
    _error(await _pd(api, body, None), 401, "unauthorized")
    _error(await _pd(api, body, _sign("not-the-secret", body)), 401, "unauthorized")
    _error(await _pd(api, body, "v1=" + "0" * 64), 401, "unauthorized")
    # a valid signature for a different body (tampering) is refused
    _error(await _pd(api, body, _sign(secret, _pd_body(key="other"))), 401, "unauthorized")
    # a bearer token is not a substitute for the signature
    r = await api.client.post(
        "/v1/alerts/pagerduty",
        content=body,
        headers={"Content-Type": "application/json", **auth("alertbot")},
    )
    _error(r, 401, "unauthorized")
    # signed but not a PagerDuty webhook: a clear 422
    junk = b'{"hello": "world"}'
    _error(await _pd(api, junk, _sign(secret, junk)), 422, "invalid_request")
    not_json = b"not json"
    _error(await _pd(api, not_json, _sign(secret, not_json)), 422, "invalid_request")
    events = await read_log(kafka_bootstrap, api.settings.kafka.topics.events)
    assert events == [], "a refused webhook appended something"


async def test_pagerduty_webhook_normalized_and_folded(api: Api, kafka_bootstrap: str) -> None:
    secret = api.settings.api.conn_pagerduty_webhook_secret
    body = _pd_body()
    # several signatures (secret rotation): one valid is enough
    r = await _pd(api, body, f"v1={'f' * 64}, {_sign(secret, body)}")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["appended"] == 1 and first["folded"] == 0
    [incident_id] = first["incidents"]
    # the same incident again (new PagerDuty event id, same incident key): folded
    again = _pd_body()
    r = await _pd(api, again, _sign(secret, again))
    assert r.status_code == 200, r.text
    assert r.json()["folded"] == 1 and r.json()["appended"] == 0
    assert r.json()["incidents"] == [incident_id]
    # a non-incident event is ignored
    other = _pd_body(event_type="service.updated")
    r = await _pd(api, other, _sign(secret, other))
    assert r.status_code == 200 and r.json()["ignored"] == 1, r.text
    # resolution: appended to the same incident, carrying the fold count
    done = _pd_body(event_type="incident.resolved")
    r = await _pd(api, done, _sign(secret, done))
    assert r.status_code == 200, r.text
    assert r.json()["appended"] == 1 and r.json()["incidents"] == [incident_id]

    events = await read_log(kafka_bootstrap, api.settings.kafka.topics.events)
    opened = [e for e in events if e.event_type == "IncidentOpened"]
    assert len(opened) == 1 and opened[0].incident_id == incident_id
    assert opened[0].payload.service == "Payments-API"
    assert opened[0].payload.opened_from_alert == "pd-key-1"
    assert opened[0].payload.severity == "sev2"
    received = of_incident(events, incident_id, "AlertReceived")
    assert [a.payload.status for a in received] == ["firing", "resolved"]
    p = received[0].payload
    assert (p.source, p.fingerprint, p.service, p.severity, p.summary) == (
        "pagerduty",
        "pd-key-1",
        "Payments-API",
        "high",
        "Payments latency high",
    )
    assert p.labels["pagerduty_event"] == "incident.triggered"
    assert received[0].actor.kind == "service" and received[0].actor.id == "pagerduty"
    assert received[1].payload.duplicates_folded == 1
    _no_actions(events)


async def test_alert_attaches_to_the_open_incident_of_its_service(api: Api) -> None:
    inc = await api.open_incident(service="payments")
    hook = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "A", "service": "payments"}},
            {"status": "firing", "labels": {"alertname": "B", "service": "payments"}},
        ],
    }
    r = await api.post("/v1/alerts/alertmanager", "alertbot", hook)
    assert r.status_code == 200, r.text
    assert r.json()["appended"] == 2 and r.json()["incidents"] == [inc]
    _error(await api.post("/v1/alerts/alertmanager", "olive", hook), 403, "forbidden")
    _error(await api.client.post("/v1/alerts/alertmanager", json=hook), 401, "unauthorized")
