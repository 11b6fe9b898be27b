"""Privilege escalation between roles and teams, replayed webhooks and hostile inputs,
against the real API over real Kafka and PostgreSQL. Every refusal is a 4xx and changes
nothing: the incident's ledger end (sequence, head hash) is the same before and after."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from security_support import as_

ORDERS = {"action": "restart_dependency_tier", "tier": "pricing-cache", "region": "us-east"}


async def _open(api: Any) -> str:
    r = await api.client.post(
        "/v1/incidents",
        json={
            "title": "checkout failing",
            "service": "checkout",
            "runbook": "checkout-authority.yaml",
        },
        headers=as_("alice"),
    )
    if r.status_code != 201:
        return str(await api.open_incident())
    return str(r.json()["incident_id"])


def _end(api: Any, inc: str) -> tuple[Any, ...]:
    """What a refusal must not change: every record but an audit DirectiveRefused (an
    API refusal is kept in the ledger as a blocked directive, DESIGN.md invariant 9),
    the holder, the hold, the close, the authority, and every directive not refused."""
    view = api.app.state.runtime.view
    state = view.state(inc)
    kept = [e.event.event_id for e in view.ledger(inc) if e.event.event_type != "DirectiveRefused"]
    live = {c: d.status.value for c, d in state.directives.items() if d.status.value != "refused"}
    return (kept, state.holder, state.hold, state.closed, state.authority_sha256, live)


async def _based_on(api: Any, inc: str) -> int:
    return int(api.app.state.runtime.view.state(inc).sequence)


CASES = [
    # (who, verb, path suffix, body, expected status)
    ("olive", "direct", "/directives", None, 403),  # observer directs
    ("alertbot", "direct", "/directives", None, 403),  # integration token directs
    ("rob", "direct", "/directives", None, 403),  # specialist of another team
    ("dana", "direct", "/directives", None, 403),  # right team, but not the holder
    (None, "direct", "/directives", None, 401),  # no authentication
    ("olive", "hold", "/hold", {"detail": "x"}, 403),  # observer holds
    ("dana", "resume", "/resume", {}, 403),  # a non-holder resumes (hold release)
    ("rob", "handoff", "/handoff", {"to_team": "database-platform"}, 403),  # not the holder
    (
        "olive",
        "takeover",
        "/takeover",
        {"team": "database-platform", "packet_sha256": "ab" * 32},
        403,
    ),
    (
        "rob",
        "takeover",
        "/takeover",
        {"team": "database-platform", "packet_sha256": "ab" * 32},
        403,
    ),
    ("alertbot", "close", "/close", {"resolution": "done"}, 403),
]


@pytest.mark.parametrize(("who", "verb", "suffix", "body", "status"), CASES)
async def test_escalation_is_refused_and_changes_nothing(
    api: Any, who: str | None, verb: str, suffix: str, body: Any, status: int
) -> None:
    inc = await _open(api)
    if verb == "resume":  # something to release
        r = await api.client.post(f"/v1/incidents/{inc}/hold", json={}, headers=as_("alice"))
        assert r.status_code == 200, r.text
    if body is None:
        body = {"action": ORDERS, "based_on_sequence": await _based_on(api, inc)}
    before = _end(api, inc)
    r = await api.client.post(f"/v1/incidents/{inc}{suffix}", json=body, headers=as_(who))
    assert r.status_code == status, (who, verb, r.status_code, r.text)
    assert set(r.json()) == {"error"}
    assert _end(api, inc) == before, f"{who} {verb}: refused but the incident changed"


@pytest.mark.parametrize("who", ["olive", "alertbot", "rob"])
async def test_only_admins_throw_the_kill_switch(api: Any, who: str) -> None:
    r = await api.client.post("/v1/kill-switch/engage", json={"reason": "x"}, headers=as_(who))
    assert r.status_code in (401, 403), r.text
    r = await api.client.get("/v1/control", headers=as_("alice"))
    assert r.json()["kill_switch"] is False


# --- replayed PagerDuty deliveries ----------------------------------------------------------


def _pd(incident_key: str) -> bytes:
    return orjson.dumps(
        {
            "event": {
                "id": f"01SEC{uuid.uuid4().hex[:10].upper()}",
                "event_type": "incident.triggered",
                "resource_type": "incident",
                "occurred_at": "2026-11-22T10:00:00.000Z",
                "data": {
                    "id": "PSEC001",
                    "type": "incident",
                    "number": 7,
                    "status": "triggered",
                    "incident_key": incident_key,
                    "created_at": "2026-11-22T09:59:00Z",
                    "title": "Checkout errors",
                    "service": {"id": "PSVC", "summary": "Checkout", "type": "service_reference"},
                    "urgency": "high",
                },
            }
        }
    )


async def test_a_replayed_pagerduty_delivery_changes_nothing(api: Any) -> None:
    """PagerDuty redelivers the same webhook (same X-Webhook-Id, same bytes, same
    signature) up to 5 times: the second delivery appends nothing."""
    secret = api.settings.api.conn_pagerduty_webhook_secret
    body = _pd(f"sec-{uuid.uuid4().hex[:8]}")
    sig = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-PagerDuty-Signature": sig,
        "X-Webhook-Id": str(uuid.uuid4()),
    }
    first = await api.client.post("/v1/alerts/pagerduty", content=body, headers=headers)
    assert first.status_code == 200, first.text
    (inc,) = first.json()["incidents"]
    before = _end(api, inc)
    again = await api.client.post("/v1/alerts/pagerduty", content=body, headers=headers)
    assert again.status_code < 500, again.text
    assert _end(api, inc) == before, "a replayed delivery changed the incident"


async def test_a_forged_pagerduty_signature_is_refused(api: Any) -> None:
    body = _pd("sec-forged")
    sig = "v1=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    r = await api.client.post(
        "/v1/alerts/pagerduty",
        content=body,
        headers={"Content-Type": "application/json", "X-PagerDuty-Signature": sig},
    )
    assert r.status_code == 401, r.text


# --- hostile inputs ------------------------------------------------------------------------


async def _incident_count(api: Any) -> int:
    r = await api.client.get("/v1/incidents", headers=as_("alice"))
    assert r.status_code == 200, r.text
    body = r.json()
    return len(body["items"] if isinstance(body, dict) and "items" in body else body)


HOSTILE_IDS = ["inc\x07bell", "..", "inc/../../etc", "inc\u202eevil", "a" * 5000, "inc%00nul"]


@pytest.mark.parametrize("incident_id", HOSTILE_IDS)
async def test_hostile_incident_ids_are_4xx(api: Any, incident_id: str) -> None:
    before = await _incident_count(api)
    for method, suffix, body in (
        ("GET", "", None),
        ("POST", "/hold", {}),
        ("POST", "/directives", {"action": ORDERS, "based_on_sequence": 0}),
    ):
        path = f"/v1/incidents/{quote(incident_id, safe='')}{suffix}"
        r = await api.client.request(method, path, json=body, headers=as_("alice"))
        assert 400 <= r.status_code < 500, (incident_id, suffix, r.status_code, r.text[:200])
    assert await _incident_count(api) == before


@pytest.mark.parametrize(
    "field_value",
    ["checkout\x00", "check\nout", "../checkout", "checkout\u0085", " checkout"],
)
async def test_hostile_names_in_bodies_are_4xx(api: Any, field_value: str) -> None:
    inc = await _open(api)
    before = _end(api, inc)
    action = {"action": "drain_worker_pool", "pool": field_value, "region": "us-east"}
    r = await api.client.post(
        f"/v1/incidents/{inc}/directives",
        json={"action": action, "based_on_sequence": await _based_on(api, inc)},
        headers=as_("alice"),
    )
    assert 400 <= r.status_code < 500, r.text[:300]
    assert _end(api, inc) == before


async def test_a_10_mb_body_is_refused_with_413(api: Any) -> None:
    inc = await _open(api)
    before = _end(api, inc)
    body = b'{"detail": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = await api.client.post(
        f"/v1/incidents/{inc}/hold",
        content=body,
        headers={**as_("alice"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.status_code
    assert _end(api, inc) == before
