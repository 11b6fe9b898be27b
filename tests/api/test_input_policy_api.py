"""The input policy at the API (issue 14): hostile bodies get a clear 4xx, never a 5xx,
and change nothing; a directive naming a region the authority does not declare (in its
action or in its expectation) is refused 403 region_not_allowed and recorded."""

from __future__ import annotations

from api_support import Api, of_incident, read_log

HOSTILE_TITLES = [
    "checkout\x00failing",
    "line\n## Not on hold",
    "\x1b[2Jclear",
    "evil\u202etxt",
    "x" * 301,
]


async def test_hostile_bodies_are_422_and_append_nothing(api: Api, kafka_bootstrap: str) -> None:
    inc = await api.open_incident()
    before = await api.position(inc)
    for title in HOSTILE_TITLES:
        r = await api.post("/v1/incidents", "alice", {"title": title, "service": "checkout"})
        assert r.status_code == 422, (title, r.status_code, r.text)
    for bad_id in ("_global", "GLOBAL", "a/b", "..", "a.b"):
        r = await api.post(
            "/v1/incidents", "alice", {"title": "t", "service": "checkout", "incident_id": bad_id}
        )
        assert r.status_code == 422, (bad_id, r.text)
    for name in ("../eu-west", "eu-west/..", "EU-WEST", "eu.west", "-eu"):
        r = await api.direct(
            inc,
            "alice",
            {"action": "drain_worker_pool", "pool": "checkout-workers", "region": name},
        )
        assert r.status_code == 422, (name, r.text)
        r = await api.post(f"/v1/incidents/{inc}/handoff", "alice", {"to_team": name})
        assert r.status_code == 422, (name, r.text)
    r = await api.post(f"/v1/incidents/{inc}/hold", "alice", {"detail": "a\x07b"})
    assert r.status_code == 422, r.text
    r = await api.direct(inc, "alice", {"action": "verify", "regions": [f"r{i}" for i in range(9)]})
    assert r.status_code == 422, r.text
    # Nothing was appended by any of them (a refused directive body is recorded as a
    # DirectiveRefused: count only state-changing events).
    events = of_incident(await read_log(kafka_bootstrap, api.settings.kafka.topics.events), inc)
    changed = [e for e in events[before:] if e.event_type not in {"DirectiveRefused"}]
    assert changed == [], [e.event_type for e in changed]


async def test_an_undeclared_region_in_the_expectation_is_refused(
    api: Api, kafka_bootstrap: str
) -> None:
    inc = await api.open_incident()
    r = await api.direct(
        inc,
        "alice",
        {"action": "drain_worker_pool", "pool": "checkout-workers", "region": "us-east"},
        extra={
            "expectation": {
                "kind": "worker_pool",
                "pool": "checkout-workers",
                "region": "ap-south",
                "drained": False,
            }
        },
    )
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"]["code"] == "region_not_allowed"
    assert "ap-south" in str(body["error"])
    events = of_incident(await read_log(kafka_bootstrap, api.settings.kafka.topics.events), inc)
    refused = [e for e in events if e.event_type == "DirectiveRefused"]
    assert [e.payload.reason.value for e in refused] == ["region_not_allowed"]
