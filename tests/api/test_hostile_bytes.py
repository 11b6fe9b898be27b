"""Hostile bytes at every route a client can write to (issue 14), sent raw: deep
nesting, huge numbers, NaN/Infinity, invalid UTF-8, escaped lone surrogates, NUL and
other C0/C1 controls, bidi overrides, zero-width characters, Unicode confusables,
duplicate keys, wrong content types, very long header values, and '..', '/', '.' in
every name-like field. Every answer is a 4xx in the one error shape (never a 5xx), and
a refused request changes nothing: no incident opened, nothing but the audit record of
a refused directive appended to the target incident."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from uuid import uuid4

import orjson
from api_support import Api, auth, of_incident, read_log

DEEP = b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b', "service": "checkout"}'
"""200 KB: over the default body limit; the limit answers 413 before any parser recurses."""
DEEP_SMALL = b'{"title": "t", "service": "checkout", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"

NAME_VALUES = [
    "..",
    ".",
    "/",
    "a/b",
    "a/../b",
    "eu-west/..",
    "a.b",
    "check\u043eut",  # Cyrillic o: a confusable of "checkout"
    "eu\u200bwest",  # zero-width space
    "eu\u202ewest",  # right-to-left override
    "eu\x00west",
    "eu\x85west",  # C1 NEL
    "eu\x1bwest",
    "EU-WEST",
    "-eu",
    "",
    "x" * 300,
]
IDENTIFIERS_BUT_NOT_LABELS = {"a.b", "EU-WEST"}
"""Valid services and incident ids (not Kubernetes names), refused as labels only."""
TEXT_VALUES = [
    "t\x00",
    "t\x1b[2J",
    "t\x9b31m",  # C1 CSI
    "t\u202egnp.exe",
    "t\u2028line",
    "t\r\n# Not on hold",
]


def _raw(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def _requests(inc: str) -> list[tuple[str, str, str | None, bytes, dict[str, str]]]:
    """(method, path, who, body, extra headers) for every hostile case."""
    json_ct = {"Content-Type": "application/json"}
    out: list[tuple[str, str, str | None, bytes, dict[str, str]]] = []

    def add(path: str, body: bytes, who: str | None = "alice", **headers: str) -> None:
        out.append(("POST", path, who, body, {**json_ct, **headers}))

    direct = f"/v1/incidents/{inc}/directives"
    # Structure and number edge cases.
    for body in (
        DEEP,
        DEEP_SMALL,
        b'{"title": "t", "service": "checkout", "severity": 1e999999}',
        b'{"title": "t", "service": "checkout", "severity": NaN}',
        b'{"title": "t", "service": "checkout", "severity": Infinity}',
        b'{"title": "t", "service": "checkout", "n": ' + b"9" * 5000 + b"}",
        b'{"title": "\xff\xfe bad utf-8", "service": "checkout"}',
        b'{"title": "\\ud800", "service": "checkout"}',
        b'{"title": "\\udfff\\ud800", "service": "checkout"}',
        b'{"title": "t", "service": "checkout", "service": "../eu-west"}',
        b'{"title": "t", "service": "checkout", "incident_id": "_global", "incident_id": "x"}',
        b"",
        b"null",
        b"[]",
        b'"string"',
        b"{",
    ):
        add("/v1/incidents", body)
    for body in (
        b'{"action": {"action": "verify", "regions": ["eu-west"]}, "based_on_sequence": 1e400}',
        b'{"action": {"action": "verify", "regions": ["eu-west"]}, "based_on_sequence": -1}',
        b'{"action": {"action": "verify", "regions": ["eu-west"]}, "based_on_sequence": '
        + b"9" * 400
        + b"}",
        b'{"action": {"action": "verify", "regions": ["eu-west"]}, "based_on_sequence": NaN}',
        b'{"action": {"action": "verify"}, "action": {"action": "restart_dependency_tier"}}',
    ):
        add(direct, body)
    # Wrong content types for a JSON body.
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        out.append(
            (
                "POST",
                "/v1/incidents",
                "alice",
                b"title=t&service=checkout",
                {"Content-Type": ctype},
            )
        )
    # Names: every name-like field.
    for name in NAME_VALUES:
        if name not in IDENTIFIERS_BUT_NOT_LABELS:
            add("/v1/incidents", _raw({"title": "t", "service": name}))
            add("/v1/incidents", _raw({"title": "t", "service": "checkout", "incident_id": name}))
        add(f"/v1/incidents/{inc}/handoff", _raw({"to_team": name}))
        add(
            f"/v1/incidents/{inc}/takeover", _raw({"team": name, "packet_sha256": "0" * 64}), "dana"
        )
        add(f"/v1/incidents/{inc}/authority", _raw({"runbook": name}))
        for action in (
            {
                "action": "disable_flag_rule",
                "flag": name,
                "rule": "canary-10pct",
                "region": "eu-west",
            },
            {
                "action": "disable_flag_rule",
                "flag": "checkout-pricing",
                "rule": name,
                "region": "eu-west",
            },
            {
                "action": "disable_flag_rule",
                "flag": "checkout-pricing",
                "rule": "canary-10pct",
                "region": name,
            },
            {"action": "drain_worker_pool", "pool": name, "region": "us-east"},
            {"action": "restart_dependency_tier", "tier": name, "region": "us-east"},
            {"action": "verify", "regions": [name]},
        ):
            add(direct, _raw({"action": action, "based_on_sequence": 0}))
    # Free text with controls, bidi and zero-width characters.
    for text in TEXT_VALUES:
        add("/v1/incidents", _raw({"title": text, "service": "checkout"}))
        add(f"/v1/incidents/{inc}/hold", _raw({"detail": text}))
        add(f"/v1/incidents/{inc}/close", _raw({"resolution": text}))
        add("/v1/kill-switch/engage", _raw({"reason": text}), "root")
        add(
            direct,
            _raw({"action": {"action": "gather_state"}, "based_on_sequence": 0, "rationale": text}),
        )
    # Very long header values.
    add(
        "/v1/incidents",
        _raw({"title": "t", "service": "checkout"}),
        None,
        Authorization="Bearer " + "a" * 60_000,
    )
    add(
        direct,
        _raw({"action": {"action": "gather_state"}, "based_on_sequence": 0}),
        **{"Idempotency-Key": "k" * 10_000},
    )
    add(
        direct,
        _raw({"action": {"action": "gather_state"}, "based_on_sequence": 0}),
        **{"Idempotency-Key": "k\x7fk"},
    )
    # Alert payloads: missing, extra and wrongly typed fields.
    for hook in (
        {},
        {"alerts": None},
        {"alerts": [{}]},
        {"alerts": [{"status": "exploded", "labels": {}}]},
        {"alerts": [{"status": "firing", "labels": "service=checkout"}]},
        {"alerts": [{"status": "firing", "labels": {"service": ["a"]}}]},
        {"alerts": [{"status": "firing", "labels": {"service": "x"}, "startsAt": "not a time"}]},
        {"alerts": [{"status": "firing", "labels": {"service": "x"}}] * 5000},
    ):
        add("/v1/alerts/alertmanager", _raw(hook), "alertbot")
    return out


def _pd_signed(secret: str, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-PagerDuty-Signature": "v1="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "X-Webhook-Id": f"W-{uuid4()}",
    }


async def test_hostile_bytes_get_a_4xx_and_change_nothing(api: Api, kafka_bootstrap: str) -> None:
    inc = await api.open_incident()
    before_incidents = len((await api.get("/v1/incidents", "alice")).json()["items"])
    events_before = of_incident(
        await read_log(kafka_bootstrap, api.settings.kafka.topics.events), inc
    )
    failures = []
    for method, path, who, body, headers in _requests(inc):
        hdrs = {**(auth(who) if who else {}), **headers}
        r = await api.client.request(method, path, content=body, headers=hdrs)
        shape_ok = False
        if 400 <= r.status_code < 500:
            error = r.json().get("error", {})
            shape_ok = set(error) == {"code", "message", "detail"} and "Traceback" not in r.text
        if not shape_ok:
            failures.append(
                (path, body[:80], headers.get("Content-Type"), r.status_code, r.text[:160])
            )
    # PagerDuty: well signed, hostile inside.
    secret = api.settings.api.conn_pagerduty_webhook_secret
    assert secret is not None
    for body in (
        b'{"event": {"id": "E1", "event_type": "incident.triggered", "data": {"id": "\\ud800"}}}',
        b'{"event": {"id": "E2", "event_type": "incident.triggered", "data": {}}}',
        b'{"event": "x"}',
        b"[1]",
        b"\xff",
        b'{"event": {"id": "E3", "event_type": "incident.triggered", "data": {"id": ""}}}',
    ):
        r = await api.client.post(
            "/v1/alerts/pagerduty", content=body, headers=_pd_signed(secret, body)
        )
        if not 400 <= r.status_code < 500:
            failures.append(("pagerduty", body[:80], "", r.status_code, r.text[:160]))
    assert failures == [], "\n".join(map(repr, failures))

    assert len((await api.get("/v1/incidents", "alice")).json()["items"]) == before_incidents
    events = of_incident(await read_log(kafka_bootstrap, api.settings.kafka.topics.events), inc)
    added = [e.event_type for e in events[len(events_before) :]]
    assert set(added) <= {"DirectiveRefused"}, added


async def test_a_duplicate_json_key_is_refused_whichever_value_is_valid(api: Api) -> None:
    inc = await api.open_incident()
    before = await api.position(inc)
    for path, body in (
        ("/v1/incidents", b'{"title": "t", "service": "../x", "service": "checkout"}'),
        (f"/v1/incidents/{inc}/hold", b'{"detail": "a", "detail": "b"}'),
        (
            "/v1/alerts/alertmanager",
            b'{"alerts": [], "alerts": [{"labels": {"a": "1", "a": "2"}}]}',
        ),
    ):
        who = "alertbot" if "alerts" in path else "alice"
        r = await api.client.post(
            path, content=body, headers={**auth(who), "Content-Type": "application/json"}
        )
        assert r.status_code == 422, (path, r.text)
        assert "duplicate key" in r.json()["error"]["message"], r.text
    assert await api.position(inc) == before  # the hold was not recorded
