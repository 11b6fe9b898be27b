"""The API's edge against a careless or hostile client, on real Kafka + PostgreSQL:
bodies over the limit are refused before anything parses them (authenticated or not),
a record the log cannot take is a precise 413 that does not poison later appends (a
hold right after it is recorded), and an append whose outcome is unknown is answered
as such and resolved by a retry with the same Idempotency-Key, never executed twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from aiokafka.errors import KafkaError
from api_support import Api, issued_ids, of_incident, read_log, runtime, unacknowledged_attempt

from conn_api.errors import ApiError
from conn_schemas.events import IncidentOpened, IncidentOpenedPayload, new_event
from conn_schemas.values import Actor

MIB = 1024 * 1024


async def test_oversized_bodies_are_refused_before_auth_and_parsing(api: Api) -> None:
    ten_mib = b"[" + b"1," * (5 * MIB) + b"1]"
    for path in ("/v1/incidents", "/v1/alerts/pagerduty", "/v1/alerts/alertmanager", "/console/"):
        r = await api.client.post(path, content=ten_mib)  # no token at all
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "too_large"

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(200):  # 200 KiB without a Content-Length
            yield b" " * 1024

    r = await api.client.post(
        "/v1/incidents", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    # Within the limits the routes answer as before (here: not authenticated).
    r = await api.client.post("/v1/incidents", json={"title": "t", "service": "checkout"})
    assert r.status_code == 401


async def test_a_record_too_large_is_413_and_the_next_hold_is_recorded(
    api: Api, kafka_bootstrap: str
) -> None:
    rt = runtime(api)
    incident = await api.open_incident()
    small = new_event(
        IncidentOpened,
        incident_id=incident,
        payload=IncidentOpenedPayload(title="t", service="checkout"),
        actor=Actor.service("test"),
        producer=rt.producer.principal,
    )
    huge = small.model_copy(
        update={
            "payload": IncidentOpenedPayload.model_construct(
                title="x" * (MIB + MIB // 2), service="checkout", severity="sev2"
            )
        }
    )
    with pytest.raises(ApiError) as refused:
        await rt.append(huge)
    assert refused.value.status == 413
    assert refused.value.code == "record_too_large"

    # The broker itself refusing a record (past the client's own checks) leaves the
    # idempotent producer with a sequence gap: the next append must still succeed.
    with pytest.raises(KafkaError) as broker:
        await rt.producer.publish(
            rt.view.topics.events, incident.encode(), b"y" * (MIB + MIB // 2), sign=False
        )
    assert "TooLarge" in type(broker.value).__name__, repr(broker.value)

    r = await api.post(f"/v1/incidents/{incident}/hold", "alice", {"detail": "after"})
    assert r.status_code == 200, r.text
    assert r.json()["on_hold"] is True
    holds = of_incident(await read_log(kafka_bootstrap, rt.view.topics.events), incident)
    assert [e.event_type for e in holds].count("HoldDeclared") == 1


async def test_an_unacknowledged_directive_is_outcome_unknown_and_resolved_by_its_key(
    api: Api, kafka_bootstrap: str
) -> None:
    incident = await api.open_incident()
    key = {"Idempotency-Key": f"unknown-{incident}"}
    based_on = await api.position(incident)
    gather = {"action": "gather_state"}
    first = await unacknowledged_attempt(api, incident, gather, based_on, key)
    assert first.headers.get("Retry-After")
    error = first.json()["error"]
    assert "same Idempotency-Key" in error["message"]

    again = await api.direct(incident, "alice", gather, based_on=based_on, headers=key)
    assert again.status_code == 202, again.text
    correlation = again.json()["correlation_id"]
    assert error["detail"]["correlation_id"] == correlation
    assert await issued_ids(kafka_bootstrap, api, incident) == [correlation]
    # And the API keeps appending (a hold right after).
    r = await api.post(f"/v1/incidents/{incident}/hold", "alice", {})
    assert r.status_code == 200, r.text


HOSTILE_VALUES: list[Any] = [
    "a\x00b",
    "x\x1b[31m",
    "\u202e",
    "\x7f",
    "line\nbreak",
    "\ufeff",
    5,
    [1],
    {"a": {"b": None}},
    None,
    1e308,
    True,
]


async def test_control_characters_and_unexpected_types_never_answer_5xx(
    api: Api, kafka_bootstrap: str
) -> None:
    incident = await api.open_incident()
    answers: list[tuple[str, Any, int]] = []
    for value in HOSTILE_VALUES:
        based_on = await api.position(incident)
        for path, who, body in [
            ("/v1/incidents", "alice", {"title": value, "service": "checkout"}),
            ("/v1/incidents", "alice", {"title": "t", "service": value}),
            (f"/v1/incidents/{incident}/hold", "alice", {"detail": value}),
            (f"/v1/incidents/{incident}/resume", "alice", {"detail": value}),
            (f"/v1/incidents/{incident}/handoff", "alice", {"to_team": value}),
            (
                f"/v1/incidents/{incident}/directives",
                "alice",
                {
                    "action": {"action": "gather_state"},
                    "based_on_sequence": based_on,
                    "rationale": value,
                },
            ),
            (
                "/v1/alerts/alertmanager",
                "alertbot",
                {
                    "version": "4",
                    "status": "firing",
                    "alerts": [
                        {
                            "status": "firing",
                            "labels": {"alertname": value, "service": "checkout"},
                            "annotations": {"summary": value},
                        }
                    ],
                },
            ),
        ]:
            r = await api.post(path, who, body, headers={"Idempotency-Key": f"k-{uuid4()}"})
            answers.append((path.rsplit("/", 1)[-1], value, r.status_code))
            assert r.status_code < 500, (path, value, r.text[:300])
            if r.status_code >= 400:
                error = r.json()["error"]
                assert set(error) == {"code", "message", "detail"}
                assert "Traceback" not in r.text
        r = await api.post(f"/v1/incidents/{incident}/resume", "alice", {})  # if held
        assert r.status_code in (200, 409), r.text
    assert answers
    # A directive answered with an error was never issued.
    issued = of_incident(
        await read_log(kafka_bootstrap, runtime(api).view.topics.events),
        incident,
        "DirectiveIssued",
    )
    assert all(e.payload.rationale in HOSTILE_VALUES for e in issued)


async def test_an_authority_yaml_bomb_is_refused_with_a_4xx(api: Api) -> None:
    incident = await api.open_incident(runbook=False)
    laughs = ["a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        laughs.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    content = "\n".join([*laughs, "name: laughs", "version: '1'"])
    r = await api.post(f"/v1/incidents/{incident}/authority", "alice", {"content": content})
    assert r.status_code == 422, r.text
    assert "aliases" in r.json()["error"]["message"]


async def test_a_directive_with_very_long_lists_is_refused_or_recorded_never_dropped(
    api: Api, kafka_bootstrap: str
) -> None:
    incident = await api.open_incident()
    huge = {"action": "verify", "regions": [f"region-{i}" for i in range(20_000)]}
    r = await api.direct(incident, "alice", huge)
    assert r.status_code == 413, r.text  # ~300 KB: over the body limit, never parsed
    # Within the body limit, whatever the answer, an issued directive is in the log.
    long = {"action": "verify", "regions": [f"r{i}" for i in range(5_000)]}
    r = await api.direct(incident, "alice", long)
    assert r.status_code < 500, r.text
    if r.status_code == 202:
        issued = of_incident(
            await read_log(kafka_bootstrap, runtime(api).view.topics.events),
            incident,
            "DirectiveIssued",
        )
        assert r.json()["correlation_id"] in [e.correlation_id for e in issued]
