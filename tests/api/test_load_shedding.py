"""Back-pressure: past its in-flight limit the API sheds load at once (503 overloaded,
Retry-After) without doing anything of the shed request, keeps answering its ops
endpoints and the stops, and takes work again as soon as capacity is free.

The limit is forced to 1 and held deterministically: a directive is parked inside the
API on its incident's lock (taken by the test), so exactly one request is in flight.
No timing is asserted."""

from __future__ import annotations

import asyncio
from typing import Any

from api_support import Api, of_incident, read_log, running_api, settings_for


async def _until(condition: Any) -> None:
    async with asyncio.timeout(30):  # a hang guard, not a timing assertion
        while not condition():
            await asyncio.sleep(0)


async def test_past_capacity_the_api_sheds_load_and_does_nothing_of_it(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    settings = settings_for(kafka_bootstrap, conn_topics, fresh_database, conn_api_max_in_flight=1)
    async with running_api(settings) as api:
        await _shed_and_recover(api, kafka_bootstrap, conn_topics.events)


async def _shed_and_recover(api: Api, bootstrap: str, topic: str) -> None:
    busy = await api.open_incident()
    other = await api.open_incident()
    based_on = await api.position(busy)
    other_based_on = await api.position(other)
    capacity = api.app.state.capacity
    lock = api.app.state.runtime.locks[busy]

    await lock.acquire()
    try:
        parked = asyncio.create_task(
            api.direct(busy, "alice", {"action": "gather_state"}, based_on=based_on)
        )
        await _until(lambda: capacity.in_flight == 1)

        # One more directive, with a key: shed before anything is decided or claimed.
        shed_body = {"action": {"action": "update_incident_record", "note": "shed"}}
        key = {"Idempotency-Key": "shed-then-retried"}
        shed = await api.direct(
            other, "alice", shed_body["action"], based_on=other_based_on, headers=key
        )
        assert shed.status_code == 503, shed.text
        assert shed.headers["Retry-After"] == "1"
        error = shed.json()["error"]
        assert error["code"] == "overloaded"
        assert error["detail"]["limit"] == 1
        # Reads are shed too; the ops endpoints and the stops are not.
        assert (await api.get(f"/v1/incidents/{other}")).status_code == 503
        assert (await api.client.get("/readyz")).status_code == 200
        assert (await api.client.get("/metrics")).status_code == 200
        hold = await api.post(f"/v1/incidents/{other}/hold", "alice", {"detail": "overloaded"})
        assert hold.status_code < 300, hold.text
        assert capacity.in_flight == 1
    finally:
        lock.release()
    assert (await parked).status_code == 202
    await _until(lambda: capacity.in_flight == 0)

    # Capacity is free: the shed request, retried with its key, is decided now (its key
    # was never claimed), once.
    retried = await api.direct(other, "alice", shed_body["action"], headers=key)
    assert retried.status_code < 500, retried.text  # issued, or refused under the hold
    assert not retried.json().get("replayed")
    log = await read_log(bootstrap, topic)
    decided = of_incident(log, other, "DirectiveIssued") + of_incident(
        log, other, "DirectiveRefused"
    )
    assert len(decided) == 1, [e.event_type for e in decided]


async def test_past_the_pipeline_backlog_new_directives_are_shed_and_stops_are_not(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    """No executor runs here: a directive's outcome never comes, so with
    CONN_API_MAX_BACKLOG=1 the first directive fills the backlog."""
    settings = settings_for(kafka_bootstrap, conn_topics, fresh_database, conn_api_max_backlog=1)
    async with running_api(settings) as api:
        incident = await api.open_incident()
        first = await api.direct(incident, "alice", {"action": "gather_state"})
        assert first.status_code == 202, first.text
        key = {"Idempotency-Key": "backlogged"}
        shed = await api.direct(incident, "alice", {"action": "gather_state"}, headers=key)
        assert shed.status_code == 503, shed.text
        assert shed.headers["Retry-After"] == "1"
        error = shed.json()["error"]
        assert error["code"] == "overloaded" and error["detail"]["backlog"] == 1
        # Nothing of it was done: not decided, not recorded, its key not claimed.
        log = await read_log(kafka_bootstrap, conn_topics.events)
        decided = of_incident(log, incident, "DirectiveIssued") + of_incident(
            log, incident, "DirectiveRefused"
        )
        assert len(decided) == 1
        # Control verbs are not directives: a hold goes through.
        hold = await api.post(f"/v1/incidents/{incident}/hold", "alice", {"detail": "backlog"})
        assert hold.status_code < 300, hold.text


async def test_a_saturated_event_loop_sheds_directives_and_never_a_hold(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    """Requests waiting before the app (behind a lagging event loop) are invisible to
    the in-flight count: past CONN_API_MAX_LOOP_LAG_SECONDS the API sheds them at once.
    The lag is set by the test (its watcher stopped), so nothing depends on timing."""
    settings = settings_for(
        kafka_bootstrap, conn_topics, fresh_database, conn_api_max_loop_lag_seconds=0.1
    )
    async with running_api(settings) as api:
        incident = await api.open_incident()
        based_on = await api.position(incident)
        capacity = api.app.state.capacity
        watch = api.app.state.loop_lag_watch
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        capacity.loop_lag = 5.0  # as if every request had waited 5 s before the app saw it

        key = {"Idempotency-Key": "lagged"}
        action = {"action": "update_incident_record", "note": "lagged"}
        shed = await api.direct(incident, "alice", action, based_on=based_on, headers=key)
        assert shed.status_code == 503, shed.text
        assert shed.headers["Retry-After"] == "1"
        error = shed.json()["error"]
        assert error["code"] == "overloaded" and error["detail"]["reason"] == "loop_lag"
        assert (await api.get(f"/v1/incidents/{incident}")).status_code == 503
        log = await read_log(kafka_bootstrap, conn_topics.events)
        assert not of_incident(log, incident, "DirectiveIssued") + of_incident(
            log, incident, "DirectiveRefused"
        )
        hold = await api.post(f"/v1/incidents/{incident}/hold", "alice", {"detail": "saturated"})
        assert hold.status_code < 300, hold.text

        capacity.loop_lag = 0.0  # the queue drained: the same request is decided now, once
        retried = await api.direct(incident, "alice", action, headers=key)
        assert retried.status_code < 500, retried.text
        assert not retried.json().get("replayed")
        log = await read_log(kafka_bootstrap, conn_topics.events)
        decided = of_incident(log, incident, "DirectiveIssued") + of_incident(
            log, incident, "DirectiveRefused"
        )
        assert len(decided) == 1, [e.event_type for e in decided]
