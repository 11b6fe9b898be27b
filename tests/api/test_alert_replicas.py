"""Alert intake across API replicas (issue 14, intake idempotency): two API processes'
worth of runtimes (each its own producer, fold, and in-process locks) over the same
Kafka and PostgreSQL receive the same alerts at the same moment, as an Alertmanager HA
pair posting to a load-balanced API does. Each service gets exactly one incident, and
each alert occurrence is recorded once (its duplicate folded), whichever replica wins."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

from api_support import read_log, running_api, settings_for


def _hook(service: str, fingerprint: str) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "ErrorRate", "service": service, "severity": "critical"},
        "annotations": {"summary": f"{service} error rate high"},
        "startsAt": "2026-12-04T18:00:00Z",
        "fingerprint": fingerprint,
    }
    return {"version": "4", "status": "firing", "alerts": [alert]}


async def test_replicas_receiving_the_same_alerts_at_once_open_one_incident_each(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    settings = settings_for(kafka_bootstrap, conn_topics, fresh_database)
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(running_api(settings))
        two = await stack.enter_async_context(running_api(settings))
        services = [f"svc-{uuid.uuid4().hex[:6]}" for _ in range(4)]
        posts = []
        for service in services:
            same = _hook(service, f"fp{uuid.uuid4().hex[:14]}")  # the HA pair's duplicate
            other = _hook(service, f"fp{uuid.uuid4().hex[:14]}")  # another alert, same service
            posts += [
                one.post("/v1/alerts/alertmanager", "alertbot", same),
                two.post("/v1/alerts/alertmanager", "alertbot", same),
                two.post("/v1/alerts/alertmanager", "alertbot", other),
            ]
        answers = await asyncio.gather(*posts)
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        events = await read_log(kafka_bootstrap, conn_topics.events)

    opened = Counter(e.payload.service for e in events if e.event_type == "IncidentOpened")
    assert {s: opened[s] for s in services} == dict.fromkeys(services, 1), opened
    incident_of = {
        e.payload.service: e.incident_id for e in events if e.event_type == "IncidentOpened"
    }
    received = Counter(
        (e.incident_id, e.payload.fingerprint) for e in events if e.event_type == "AlertReceived"
    )
    # Every alert in its service's one incident, each occurrence once (the duplicate folded).
    assert all(count == 1 for count in received.values()), received
    for service in services:
        assert len([k for k in received if k[0] == incident_of[service]]) == 2, (service, received)
    folded = sum(r.json()["folded"] for r in answers)
    assert folded == len(services), [r.json() for r in answers]


async def test_a_replica_whose_fold_lags_attaches_to_the_incident_another_opened(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    """Deterministic lag: replica two's fold is held back (its handler waits) while
    replica one opens the incident; two still attaches the alerts it then receives."""
    settings = settings_for(kafka_bootstrap, conn_topics, fresh_database)
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(running_api(settings))
        two = await stack.enter_async_context(running_api(settings))
        loop = two.app.state.runtime.view.loop
        fold = loop.handler
        release = asyncio.Event()

        async def lagging(item: Any) -> None:
            await release.wait()
            await fold(item)

        loop.handler = lagging
        service = f"svc-{uuid.uuid4().hex[:6]}"
        same = _hook(service, f"fp{uuid.uuid4().hex[:14]}")
        first = await one.post("/v1/alerts/alertmanager", "alertbot", same)
        assert first.status_code == 200 and first.json()["appended"] == 1, first.text
        [incident] = first.json()["incidents"]
        duplicate = await two.post("/v1/alerts/alertmanager", "alertbot", same)
        other = _hook(service, f"fp{uuid.uuid4().hex[:14]}")
        another = await two.post("/v1/alerts/alertmanager", "alertbot", other)
        release.set()
        loop.handler = fold
        assert duplicate.status_code == 200 and duplicate.json()["folded"] == 1, duplicate.text
        assert another.status_code == 200, another.text
        assert another.json()["incidents"] == [incident], another.text
        events = await read_log(kafka_bootstrap, conn_topics.events)
    opened = [e for e in events if e.event_type == "IncidentOpened"]
    assert [e.incident_id for e in opened if e.payload.service == service] == [incident]
