"""Intake idempotency: PagerDuty deliveries are remembered by webhook id and event id
(persisted, at least a day), an alert about a closed incident is recorded in it
without opening or re-opening anything, and Alertmanager duplicates (an HA pair sending
the same group twice: same fingerprint and startsAt) fold into one."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

import httpx
import orjson
from api_support import Api, of_incident, read_log, running_api, settings_for


def _pd_body(event_type: str, key: str, service: str, event_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "event": {
                "id": event_id or f"01E{uuid.uuid4().hex[:10].upper()}",
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": "2026-11-22T10:00:00.000Z",
                "data": {
                    "id": f"P{uuid.uuid4().hex[:6].upper()}",
                    "type": "incident",
                    "status": "resolved" if event_type == "incident.resolved" else "triggered",
                    "incident_key": key,
                    "created_at": "2026-11-22T09:59:00Z",
                    "title": "Payments latency high",
                    "service": {"id": "PF9KMXH", "summary": service},
                    "urgency": "high",
                },
            }
        }
    )


async def _deliver(api: Api, body: bytes, webhook_id: str) -> dict[str, Any]:
    secret = api.settings.api.conn_pagerduty_webhook_secret
    assert secret is not None
    signature = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    r: httpx.Response = await api.client.post(
        "/v1/alerts/pagerduty",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": signature,
            "X-Webhook-Id": webhook_id,
        },
    )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def test_a_replayed_pagerduty_delivery_after_resolve_does_not_fire_again(
    api: Api, kafka_bootstrap: str
) -> None:
    key, service = f"pd-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:6]}"
    triggered = _pd_body("incident.triggered", key, service)
    first = await _deliver(api, triggered, "W-1")
    [incident] = first["incidents"]
    resolved = await _deliver(api, _pd_body("incident.resolved", key, service), "W-2")
    assert resolved["appended"] == 1 and resolved["incidents"] == [incident]
    # PagerDuty retries the first delivery later (same webhook id, same body)...
    replay = await _deliver(api, triggered, "W-1")
    assert replay.get("duplicate_delivery") is True and replay["appended"] == 0
    # ...or the same event arrives under another delivery id: the event id remembers it.
    again = await _deliver(api, triggered, "W-1-redelivered")
    assert again.get("duplicate_delivery") is True

    events = await read_log(kafka_bootstrap, api.settings.kafka.topics.events)
    received = of_incident(events, incident, "AlertReceived")
    assert [e.payload.status for e in received] == ["firing", "resolved"]
    assert len([e for e in events if e.event_type == "IncidentOpened"]) == len(
        {e.incident_id for e in events if e.event_type == "IncidentOpened"}
    )


async def test_an_alert_for_a_closed_incident_is_recorded_without_opening_anything(
    api: Api, kafka_bootstrap: str
) -> None:
    key, service = f"pd-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:6]}"
    triggered = _pd_body("incident.triggered", key, service)
    [incident] = (await _deliver(api, triggered, "C-1"))["incidents"]
    r = await api.post(f"/v1/incidents/{incident}/close", "alice", {"resolution": "fixed"})
    assert r.status_code == 200, r.text

    replay = await _deliver(api, triggered, "C-1")  # the retry of a delivery: nothing
    assert replay.get("duplicate_delivery") is True
    # A new event about the same PagerDuty incident (e.g. re-triggered) after the close:
    later = await _deliver(api, _pd_body("incident.triggered", key, service), "C-2")
    assert later["appended"] == 0 and later["recorded_after_close"] == 1, later
    assert later["incidents"] == [incident]

    events = await read_log(kafka_bootstrap, api.settings.kafka.topics.events)
    opened = [e for e in events if e.event_type == "IncidentOpened" and e.payload.service]
    assert [e.incident_id for e in opened if e.payload.service == service] == [incident]
    received = of_incident(events, incident, "AlertReceived")
    assert len(received) == 2
    assert received[-1].payload.labels.get("conn_after_close") == "true"
    state = (await api.get(f"/v1/incidents/{incident}", "alice")).json()
    assert state["status"] == "closed"


async def test_alertmanager_duplicates_fold_into_one(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    # A zero dedup window: only the occurrence (fingerprint + startsAt) makes the second
    # notification of an HA pair, or a later re-notification, a duplicate.
    settings = settings_for(
        kafka_bootstrap, conn_topics, fresh_database, conn_alert_dedup_window_seconds=0
    )
    async with running_api(settings) as api:
        alert = {
            "status": "firing",
            "labels": {"alertname": "QueueDepth", "service": "orders"},
            "annotations": {"summary": "queue depth high"},
            "startsAt": "2026-12-04T10:00:00Z",
            "fingerprint": "f00dfeed12345678",
        }
        hook = {"version": "4", "status": "firing", "alerts": [alert]}
        one = await api.post("/v1/alerts/alertmanager", "alertbot", hook)
        two = await api.post("/v1/alerts/alertmanager", "alertbot", hook)  # the HA peer
        assert one.status_code == two.status_code == 200, (one.text, two.text)
        assert one.json()["appended"] == 1
        assert two.json()["appended"] == 0 and two.json()["folded"] == 1, two.text
        # A new occurrence (another startsAt) of the same fingerprint is new information.
        later = {**alert, "startsAt": "2026-12-04T12:00:00Z"}
        three = await api.post("/v1/alerts/alertmanager", "alertbot", {**hook, "alerts": [later]})
        assert three.json()["appended"] == 1, three.text
        events = await read_log(kafka_bootstrap, conn_topics.events)
        received = [e for e in events if e.event_type == "AlertReceived"]
        assert len(received) == 2
        assert len([e for e in events if e.event_type == "IncidentOpened"]) == 1
