"""Who sees what on the ledger (invariant 10): raw tool output and unscrubbed errors
are readable by commander, specialist and admin only; observers and integration
tokens get the same entries with the raw output withheld and errors scrubbed."""

from __future__ import annotations

import asyncio
from typing import Any

from api_support import Api
from kafka_support import current

from conn_runtime.kafka import EventProducer
from conn_schemas.events import (
    StepFailed,
    StepFailedPayload,
    StepSucceeded,
    StepSucceededPayload,
    new_event,
)
from conn_schemas.observations import ActionResult
from conn_schemas.values import Actor, GatherState

SECRET = "password=hunter2"
HOST = "db-primary.prod.internal:5432"
RAW = {"stdout": f"connected to {HOST} with {SECRET}", "token": "s3cr3t-raw-token"}


async def _executor_events(api: Api, incident: str, correlation: str) -> None:
    settings = current().settings(
        api.settings.kafka.kafka_bootstrap_servers, api.settings.kafka.topics, "executor"
    )
    producer = EventProducer(settings, producer_name="test-executor")
    await producer.start()
    try:
        actor = Actor.service(producer.principal)
        action = GatherState()
        failed = new_event(
            StepFailed,
            incident_id=incident,
            payload=StepFailedPayload(
                action=action,
                error=f"could not reach https://{HOST}/admin ({SECRET})",
                summary="gather_state: failed",
                duration_ms=1.0,
            ),
            actor=actor,
            producer=producer.principal,
            correlation_id=correlation,
        )
        succeeded = new_event(
            StepSucceeded,
            incident_id=incident,
            payload=StepSucceededPayload(
                action=action,
                result=ActionResult(
                    idempotency_key=correlation, changed=True, before={}, after={}, output=RAW
                ),
                summary="gather_state: done",
                duration_ms=1.0,
            ),
            actor=actor,
            producer=producer.principal,
            correlation_id=correlation,
        )
        await producer.append(failed)
        await producer.append(succeeded)
    finally:
        await producer.stop()


async def _ledger(api: Api, incident: str, who: str) -> dict[str, Any]:
    r = await api.get(f"/v1/incidents/{incident}/ledger", who, params={"limit": 1000})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_raw_output_and_errors_only_for_the_roles_that_need_them(api: Api) -> None:
    incident = await api.open_incident()
    r = await api.direct(incident, "alice", {"action": "gather_state"})
    assert r.status_code == 202, r.text
    await _executor_events(api, incident, r.json()["correlation_id"])

    async def both_folded() -> dict[str, Any]:
        for _ in range(300):
            body = await _ledger(api, incident, "alice")
            kinds = [i["event"]["event_type"] for i in body["items"]]
            if "StepFailed" in kinds and "StepSucceeded" in kinds:
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"executor events not in the ledger: {kinds}")

    await both_folded()
    # Who: alice commander, dana specialist, root admin | olive observer, alertbot integration.
    for who in ("alice", "dana", "root"):
        body = await _ledger(api, incident, who)
        assert body["view"] == "full", who
        text = str(body["items"])
        assert SECRET in text and HOST in text and "s3cr3t-raw-token" in text, who
    for who in ("olive", "alertbot"):
        body = await _ledger(api, incident, who)
        assert body["view"] == "redacted", who
        text = str(body["items"])
        for leaked in (SECRET, "hunter2", HOST, "s3cr3t-raw-token", "stdout"):
            assert leaked not in text, (who, leaked)
        by_type = {i["event"]["event_type"]: i for i in body["items"]}
        output = by_type["StepSucceeded"]["event"]["payload"]["result"]["output"]
        assert "withheld" in output
        assert by_type["StepFailed"]["event"]["payload"]["error"].startswith("could not reach")
        assert all(i.get("redacted") for i in body["items"])
        # The rest of the ledger is the same: same entries, same order, same hashes.
        full = await _ledger(api, incident, "alice")
        assert [(i["sequence"], i["hash"]) for i in body["items"]] == [
            (i["sequence"], i["hash"]) for i in full["items"]
        ]
