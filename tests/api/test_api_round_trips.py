"""Round trips per directive at the directive API (issue 17, items 2 and 4), counted, not
timed.

The API runs in-process on real Kafka and PostgreSQL (its own pool, made by its own
start-up). Every statement asyncpg sends on any pooled connection (its reset query on
release included) is recorded by a query logger installed on each connection, in one
timeline with every acknowledged Kafka send of the API's producer and every outbound HTTP
request (the test's own client talks to the app in-process, through no network transport,
so it is not counted). The readiness probe (`SELECT 1` once a second, not per directive)
is answered without PostgreSQL so that it cannot interleave with the count, and the writer
of idempotency answers is held until the answer has been received, then drained (as it
runs anyway: it stores every answer pending at that moment in one statement). Counted after
one warm-up directive, with asyncpg's statement cache warm (a cold statement costs one
more round trip, Parse, which the logger cannot see).

The issue's target: ONE PostgreSQL round trip per directive on the request path,
idempotency key included. Before this change the API's pool reset every connection on
release (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), so a directive
with a key took 2 round trips before its answer (the claim, its reset) and 2 more after
it (the stored answer, its reset): 4 -> 2 in all, 2 -> 1 on the request path.

Oracles: the statement on the request path is the claim itself (the fence before the
append stays before the append); the directive is appended exactly once; a retry with the
same key still gets the stored answer and appends nothing; nothing the API's code sends
leaves session state that a reset would have had to clear (static check below).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from api_support import ROOT, Api, of_incident, read_log, running_api, settings_for
from round_trips import Timeline, count, is_reset, logging_pools

import conn_runtime.db
from conn_api.answers import Answers
from conn_api.store import Answer
from conn_runtime.kafka import EventProducer

GATHER = {"action": "gather_state"}


def record_everything(monkeypatch: pytest.MonkeyPatch, timeline: Timeline) -> None:
    logging_pools(monkeypatch, timeline)

    async def probe_without_postgres(_pool: asyncpg.Pool) -> bool:
        return True

    monkeypatch.setattr(conn_runtime.db, "database_ready", probe_without_postgres)

    def hold(self: Answers, answer: Answer) -> None:
        """Keep the answer pending until the test drains it: the writer stores it after the
        response at the earliest (so the response cannot have waited for it)."""
        self._pending[(answer.principal, answer.key)] = answer

    monkeypatch.setattr(Answers, "put", hold)

    real_send = EventProducer._send
    real_many = EventProducer.append_many

    async def send(self: EventProducer, topic: str, *args: Any, **kwargs: Any) -> Any:
        result = await real_send(self, topic, *args, **kwargs)
        timeline.add("append", topic)
        return result

    async def append_many(self: EventProducer, events: Any) -> Any:
        result = await real_many(self, events)
        timeline.add("append", "append_many")
        return result

    monkeypatch.setattr(EventProducer, "_send", send)
    monkeypatch.setattr(EventProducer, "append_many", append_many)

    real_http = httpx.AsyncHTTPTransport.handle_async_request

    async def http(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        timeline.add("http", f"{request.method} {request.url}")
        return await real_http(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", http)


async def settle() -> None:
    """Query loggers run soon after the statement (call_soon): let them run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def directive(
    api: Api, timeline: Timeline, incident: str, key: str | None, based_on: int | None = None
) -> tuple[httpx.Response, list[tuple[str, str]], list[tuple[str, str]]]:
    """(answer, what happened before the answer, what happened after it until the API's
    pending idempotency answers are stored)."""
    if based_on is None:
        based_on = await api.position(incident)
    await settle()
    mark = len(timeline.entries)
    headers = {"Idempotency-Key": key} if key else {}
    r = await api.direct(incident, "alice", GATHER, based_on=based_on, headers=headers)
    await settle()
    answered = len(timeline.entries)
    await api.app.state.runtime.answers.drain()  # store what is pending now, as the writer does
    await settle()
    return r, timeline.entries[mark:answered], timeline.entries[answered:]


@pytest.mark.integration
async def test_one_postgresql_round_trip_per_directive_on_the_request_path(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeline = Timeline()
    record_everything(monkeypatch, timeline)
    async with running_api(settings_for(kafka_bootstrap, conn_topics, fresh_database)) as api:
        incident = await api.open_incident()
        r, _, _ = await directive(api, timeline, incident, f"warm-{uuid.uuid4()}")  # warm-up
        assert r.status_code == 202, r.text

        key = f"k-{uuid.uuid4()}"
        based_on = await api.position(incident)
        r, request_path, after = await directive(api, timeline, incident, key, based_on)
        assert r.status_code == 202, r.text
        cid = r.json()["correlation_id"]
        no_key, no_key_path, no_key_after = await directive(api, timeline, incident, None)
        assert no_key.status_code == 202, no_key.text
        retried, retry_path, retry_after = await directive(
            api, timeline, incident, key, based_on
        )  # the same request again
        assert retried.status_code == 202 and retried.json()["replayed"] is True, retried.text
        assert retried.json()["correlation_id"] == cid
        events = of_incident(
            await read_log(kafka_bootstrap, conn_topics.events), incident, "DirectiveIssued"
        )

    print("with a key, until answered:", *request_path, sep="\n  ")
    print("with a key, after the answer:", *after, sep="\n  ")
    print("without a key:", *no_key_path, *no_key_after, sep="\n  ")
    print("the retry:", *retry_path, *retry_after, sep="\n  ")
    statements = [w for k, w in request_path if k == "pg"]
    stored = [w for k, w in after if k == "pg"]

    # No reset query on release, anywhere.
    assert not [w for k, w in timeline.entries if k == "pg" and is_reset(w)], timeline.entries

    # With an Idempotency-Key: the claim is the one round trip before the answer (and it
    # comes before the append: the fence), one acknowledged append, no outbound HTTP.
    assert len(statements) == 1, statements
    assert statements[0].startswith("INSERT INTO conn_api_idempotency"), statements
    claim = request_path.index(("pg", statements[0]))
    append = [i for i, (k, _) in enumerate(request_path) if k == "append"]
    assert len(append) == 1 and claim < append[0], request_path
    assert count(request_path, "http") == 0, request_path
    # The answer is stored after it was given, in one statement (every answer pending then).
    assert len(stored) == 1 and stored[0].startswith("UPDATE conn_api_idempotency"), stored
    assert count(after, "append") == count(after, "http") == 0, after

    # Without a key: no PostgreSQL at all, one append.
    assert count(no_key_path + no_key_after, "pg") == 0, no_key_path + no_key_after
    assert count(no_key_path, "append") == 1, no_key_path

    # The retry with the same key: the claim finds the stored answer; nothing is appended.
    assert count(retry_path, "pg") == 1 and count(retry_path + retry_after, "append") == 0
    assert [e.correlation_id for e in events].count(cid) == 1


# --- no session state: what makes the release without a reset safe ------------------------

SESSION_STATE = [
    (re.compile(r"pg_(try_)?advisory_lock(_shared)?\s*\("), "a session-level advisory lock"),
    (re.compile(r"""["']\s*SET\s+(?!LOCAL\b)(SESSION\s+)?[a-z_.]+\s*(=|TO\b)""", re.I), "a SET"),
    (re.compile(r"""["']\s*(UN)?LISTEN\b""", re.I), "a LISTEN"),
    (re.compile(r"\badd_listener\s*\("), "a LISTEN (add_listener)"),
    (re.compile(r"set_config\s*\([^)]*,\s*false", re.I), "a session-level set_config"),
]
RESET_FREE = [
    ROOT / "services" / "directive-api" / "conn_api",  # with its console: the same pool
    ROOT / "services" / "executor" / "conn_executor",
    ROOT / "services" / "packager" / "conn_packager",  # with the read model it writes
    ROOT / "runtime" / "conn_runtime",
    ROOT / "readmodel" / "conn_readmodel",  # the API reads the read model on its pool
]


def session_state_in(paths: list[Path]) -> list[str]:
    found = []
    for base in paths:
        for path in sorted(base.rglob("*.py")):
            text = path.read_text()
            for pattern, what in SESSION_STATE:
                for match in pattern.finditer(text):
                    line = text.count("\n", 0, match.start()) + 1
                    found.append(f"{path.name}:{line}: {what}")
    return found


def test_services_released_without_a_reset_leave_no_session_state_behind() -> None:
    """The directive API, the executor and the packager release connections without asyncpg's reset
    query (`create_pool(reset_session=False)`). That is safe only while nothing they (or
    the runtime and read-model code they call) send leaves session state on a connection:
    a session-level advisory lock, a SET (SET LOCAL is fine), a LISTEN. A new one fails
    here; then keep the reset for that pool, or make the state transaction-level."""
    users = [
        path
        for path in sorted((ROOT / "services").rglob("*.py"))
        if "reset_session=False" in path.read_text()
    ]
    assert users, "no service releases without a reset any more: drop this test"
    for path in users:
        assert any(base in path.parents for base in RESET_FREE), f"also scan {path}"
    assert session_state_in(RESET_FREE) == []


def test_the_session_state_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The check above can fail: each pattern catches its statement (and SET LOCAL, the
    transaction-level advisory lock and an UPDATE ... SET pass)."""
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "bad.py").write_text(
        'await conn.execute("SELECT pg_advisory_lock($1)", 1)\n'
        "await conn.execute(\"SET statement_timeout = '1s'\")\n"
        'await conn.execute("LISTEN conn_stops")\n'
        "await conn.add_listener('x', cb)\n"
        "await conn.execute(\"SELECT set_config('a.b', 'c', false)\")\n"
    )
    (sample / "good.py").write_text(
        'await conn.execute("SELECT pg_advisory_xact_lock($1)", 1)\n'
        "await conn.execute(\"SET LOCAL lock_timeout = '1s'\")\n"
        'await conn.execute("UPDATE t SET a = 1")\n'
    )
    found = [f.split(": ", 1)[1] for f in session_state_in([sample])]
    assert sorted(found) == sorted(
        [
            "a session-level advisory lock",
            "a SET",
            "a LISTEN",
            "a LISTEN (add_listener)",
            "a session-level set_config",
        ]
    ), found
