"""A retry after an append whose outcome was unknown (invariants 1 and 2 at the API),
on real Kafka + PostgreSQL: the retry with the same Idempotency-Key answers with the
directive the log holds, whatever became of it since, and never issues it a second
time: not after the executor refused it, and not while the API's own fold has not yet
read the log to its end (deciding then could "refuse" a directive that is in the log
and may run, or answer "issued" for a copy every fold ignores)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest_asyncio
from api_support import Api, issued_ids, of_incident, read_log, runtime, unacknowledged_attempt
from kafka_support import LedgerWriter

from conn_api.directives import request_hash
from conn_schemas import events as ev
from conn_schemas.values import Actor, DrainWorkerPool, RefusalReason

DRAIN = {"action": "drain_worker_pool", "pool": "checkout-workers", "region": "us-east"}
DRAIN_ACTION = DrainWorkerPool(pool="checkout-workers", region="us-east")


async def issued_in_log(bootstrap: str, api: Api, incident: str) -> list[Any]:
    topic = runtime(api).view.topics.events
    for _ in range(100):
        found = of_incident(await read_log(bootstrap, topic), incident, "DirectiveIssued")
        if found:
            return found
        await asyncio.sleep(0.1)
    return []


async def unacknowledged(
    api: Api, bootstrap: str, incident: str, based_on: int, key: dict[str, str]
) -> Any:
    """The first attempt: its DirectiveIssued is sent, but never acknowledged in time.
    Returns that DirectiveIssued, read from the log (under the id the 503 named)."""
    first = await unacknowledged_attempt(api, incident, DRAIN, based_on, key)
    (issued,) = await issued_in_log(bootstrap, api, incident)
    assert issued.correlation_id == first.json()["error"]["detail"]["correlation_id"]
    return issued


@pytest_asyncio.fixture(loop_scope="session")
async def writer(kafka_bootstrap: str, conn_topics: Any, trust: Any) -> AsyncIterator[LedgerWriter]:
    """Appends to the test's topics as the rightful producers do (their keys and logins)."""
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as w:
        yield w


async def refused_in_log(
    writer: LedgerWriter,
    incident: str,
    correlation: str,
    *,
    by: str,
    reason: RefusalReason,
    detail: str,
    checked_at: int,
) -> None:
    """The drain under `correlation` refused in the log by `by` (the executor or the
    directive API), written as that service writes it."""
    await writer.append(
        ev.new_event(
            ev.DirectiveRefused,
            incident_id=incident,
            payload=ev.DirectiveRefusedPayload(
                action=DRAIN_ACTION,
                reason=reason,
                detail=detail,
                refused_by=by,
                checked_at_sequence=checked_at,
            ),
            actor=Actor.service(by),
            producer=by,
            correlation_id=correlation,
        ),
        as_=by,
    )


async def key_left_by_an_attempt(
    dsn: str,
    incident: str,
    idem_key: str,
    based_on: int,
    *,
    outcome_unknown: bool = False,
    age: timedelta = timedelta(0),
) -> str:
    """alice's Idempotency-Key row for the drain on `incident` as an earlier attempt left
    it (claimed `age` ago; its append's outcome unknown or not): the id it claimed."""
    correlation = str(uuid.uuid4())
    body = {"action": DRAIN, "based_on_sequence": based_on}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO conn_api_idempotency (principal, idem_key, incident_id,"
            " request_sha256, correlation_id, outcome_unknown, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, now() - $7::interval)",
            "alice",
            idem_key,
            incident,
            request_hash(incident, body),
            correlation,
            outcome_unknown,
            age,
        )
    finally:
        await conn.close()
    return correlation


async def test_a_retry_after_the_executor_refused_it_does_not_issue_it_again(
    api: Api, kafka_bootstrap: str, writer: LedgerWriter
) -> None:
    incident = await api.open_incident()
    key = {"Idempotency-Key": f"refused-{incident}"}
    based_on = await api.position(incident)
    issued = await unacknowledged(api, kafka_bootstrap, incident, based_on, key)
    correlation = issued.correlation_id
    # The executor refused it meanwhile (the client has not heard of it yet).
    await refused_in_log(
        writer,
        incident,
        correlation,
        by="executor",
        reason=RefusalReason.STALE_BASE,
        detail="the incident's state changed",
        checked_at=issued.payload.based_on_sequence,
    )

    again = await api.direct(incident, "alice", DRAIN, based_on=based_on, headers=key)
    assert again.status_code == 202, again.text
    assert again.json()["correlation_id"] == correlation
    assert again.json()["recovered"] == "the earlier append had landed"
    assert await issued_ids(kafka_bootstrap, api, incident) == [correlation]


async def test_a_retry_is_not_decided_on_a_fold_behind_the_log(
    api: Api, kafka_bootstrap: str
) -> None:
    rt = runtime(api)
    incident = await api.open_incident()
    key = {"Idempotency-Key": f"behind-{incident}"}
    based_on = await api.position(incident)
    consumer = rt.view.loop.consumer
    paused = consumer.assignment()
    consumer.pause(*paused)  # the API's fold stops reading: its view falls behind the log
    try:
        correlation = (
            await unacknowledged(api, kafka_bootstrap, incident, based_on, key)
        ).correlation_id
        behind = await api.direct(incident, "alice", DRAIN, based_on=based_on, headers=key)
        assert behind.status_code == 503, behind.text
        error = behind.json()["error"]
        assert error["code"] == "outcome_unknown" and behind.headers.get("Retry-After")
        assert error["detail"]["correlation_id"] == correlation
    finally:
        consumer.resume(*paused)
    again = await api.direct(incident, "alice", DRAIN, based_on=based_on, headers=key)
    assert again.status_code == 202, again.text
    assert again.json()["correlation_id"] == correlation
    assert await issued_ids(kafka_bootstrap, api, incident) == [correlation]


async def test_a_retry_never_decides_anew_under_an_id_the_log_has_refused(
    api: Api, kafka_bootstrap: str, writer: LedgerWriter, fresh_database: str
) -> None:
    """The attempt's id is in the log as a refusal without a DirectiveIssued (no path
    writes this today; a DirectiveIssued after it would be ignored by every fold): the
    retry answers that refusal, and nothing is issued."""
    incident = await api.open_incident()
    based_on = await api.position(incident)
    idem_key = f"refusal-{incident}"
    correlation = await key_left_by_an_attempt(
        fresh_database, incident, idem_key, based_on, outcome_unknown=True
    )
    await refused_in_log(
        writer,
        incident,
        correlation,
        by="directive-api",
        reason=RefusalReason.ON_HOLD,
        detail="on hold",
        checked_at=based_on,
    )
    again = await api.direct(
        incident, "alice", DRAIN, based_on=based_on, headers={"Idempotency-Key": idem_key}
    )
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == RefusalReason.ON_HOLD.value
    assert error["detail"]["correlation_id"] == correlation
    assert await issued_ids(kafka_bootstrap, api, incident) == []


async def test_a_key_abandoned_by_a_dead_api_process_is_resolved_from_the_log(
    api: Api, kafka_bootstrap: str, fresh_database: str
) -> None:
    """An API process claimed the key and died before answering (maybe after its
    append): the key is not 'in progress' for ever. A retry once the claim is older than
    the abandonment bound treats it as unknown: the log read to its end has nothing of
    it here, so it is decided anew under the claimed id, once."""
    incident = await api.open_incident()
    based_on = await api.position(incident)
    idem_key = f"abandoned-{incident}"
    correlation = await key_left_by_an_attempt(
        fresh_database, incident, idem_key, based_on, age=timedelta(hours=1)
    )
    key = {"Idempotency-Key": idem_key}
    again = await api.direct(incident, "alice", DRAIN, based_on=based_on, headers=key)
    assert again.status_code == 202, again.text
    assert again.json()["correlation_id"] == correlation
    replay = await api.direct(incident, "alice", DRAIN, based_on=based_on, headers=key)
    assert replay.status_code == 202 and replay.json()["correlation_id"] == correlation
    assert await issued_ids(kafka_bootstrap, api, incident) == [correlation]
