"""Ledger and packet reads from the packager's PostgreSQL read model, with the REAL
packager running: equal to the API's own fold, never older than it, and a read
model that disagrees with the log's hash chain is not served."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import pytest
from api_support import Api
from fixtures_services import Proc, ProcFactory, free_port

from conn_readmodel.packet import packet_sha256
from conn_schemas.packet import TakeoverPacket

T = TypeVar("T")
SCHEMA = "conn_read"
DRAIN_US = {"action": "drain_worker_pool", "pool": "checkout-workers", "region": "us-east"}


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, within: float = 60) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = await probe()
        if got:
            return got
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
def packager(
    start_process: ProcFactory,
    kafka_bootstrap: str,
    conn_topics: Any,
    fresh_database: str,
    trust: Any,
) -> Proc:
    port = free_port()
    return start_process(
        "packager",
        "conn_packager",
        env={
            **trust.env("packager"),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CONN_TOPIC_PREFIX": conn_topics.events.removesuffix("conn.events"),
            "DATABASE_URL": fresh_database,
            "CONN_PACKAGER_METRICS_PORT": str(port),
            "CONN_READ_SCHEMA": SCHEMA,
        },
        port=port,
        health_path="/healthz",
        timeout=90,
    )


async def _fold_ledger(api: Api, inc: str, **params: Any) -> dict[str, Any]:
    """The same read answered from the API's fold (read model switched off)."""
    rt = api.app.state.runtime
    rm, rt.read_model = rt.read_model, None
    try:
        r = await api.get(f"/v1/incidents/{inc}/ledger", params=params)
    finally:
        rt.read_model = rm
    assert r.status_code == 200 and r.json()["source"] == "fold", r.text
    return dict(r.json())


async def test_ledger_and_packet_come_from_the_read_model(
    api: Api, packager: Proc, fresh_database: str
) -> None:
    inc = await api.open_incident()
    r = await api.direct(inc, "alice", DRAIN_US)
    assert r.status_code == 202, r.text
    cid = r.json()["correlation_id"]
    restart = {"action": "restart_dependency_tier", "tier": "pricing-cache", "region": "eu-west"}
    r = await api.direct(inc, "alice", restart)  # refused: one unverified step at a time
    assert r.status_code == 409, r.text
    r = await api.post(f"/v1/incidents/{inc}/handoff", "alice", {"to_team": "database-platform"})
    assert r.status_code == 200, r.text

    # The packager builds the packet, stores it, and publishes it to the log.
    async def published() -> dict[str, Any] | None:
        r = await api.get(f"/v1/incidents/{inc}/packet")
        return dict(r.json()) if r.status_code == 200 else None

    body = await eventually(published, f"a published packet\n{packager.log_tail()}")
    assert body["source"] == "packager", body
    packet = TakeoverPacket.model_validate(body["packet"])
    assert packet_sha256(packet) == body["packet_sha256"]
    assert packet.incident_id == inc and packet.to_team == "database-platform"
    assert (packet.ledger_head.sequence, packet.ledger_head.hash) == (
        body["ledger_sequence"],
        body["ledger_hash"],
    )
    assert body["markdown"]

    # The ledger from the read model equals the fold's, entry for entry.
    async def from_read_model() -> dict[str, Any] | None:
        r = await api.get(f"/v1/incidents/{inc}/ledger")
        assert r.status_code == 200, r.text
        return dict(r.json()) if r.json()["source"] == "read_model" else None

    rm_full = await eventually(from_read_model, "the read model to catch up")
    fold_full = await _fold_ledger(api, inc)
    assert rm_full["items"] == fold_full["items"]
    assert [e["event"]["event_type"] for e in rm_full["items"]][-1] == "TakeoverPacketPublished"
    for params in (
        {"limit": 2, "after": 1},
        {"event_type": ["DirectiveIssued", "DirectiveRefused"]},
        {"correlation_id": cid},
        {"actor": "alice", "limit": 3},
    ):
        r = await api.get(f"/v1/incidents/{inc}/ledger", params=params)
        assert r.status_code == 200 and r.json()["source"] == "read_model", r.text
        fold = await _fold_ledger(api, inc, **params)
        assert (r.json()["items"], r.json()["next_after"]) == (
            fold["items"],
            fold["next_after"],
        ), params
        assert r.json()["items"], params

    # Decisions stay on the fold: the packet read from the packager is accepted, the conn moves.
    r = await api.post(
        f"/v1/incidents/{inc}/takeover", "dana", {"packet_sha256": body["packet_sha256"]}
    )
    assert r.status_code == 200 and r.json()["holder"] == "dana", r.text

    # Read-your-writes: right after an append the answer includes it, from whichever source.
    r = await api.post(f"/v1/incidents/{inc}/hold", "dana", {"detail": "looking"})
    assert r.status_code == 200, r.text
    seq = r.json()["sequence"]
    r = await api.get(f"/v1/incidents/{inc}/ledger", params={"after": seq - 1})
    assert [e["sequence"] for e in r.json()["items"]][:1] == [seq], r.text

    # A hold makes the packager publish a new packet; the API shows that one.
    async def hold_packet() -> dict[str, Any] | None:
        got = await published()
        return got if got and got["trigger"] == "hold" and got["source"] == "packager" else None

    await eventually(hold_packet, "the packet published on hold")

    # A read model that disagrees with the log's hash chain is not served.
    await eventually(from_read_model, "the read model to catch up again")
    pool = await asyncpg.connect(fresh_database)
    try:
        await pool.execute(
            f"UPDATE {SCHEMA}.incidents SET head_hash = $2 WHERE incident_id = $1", inc, "0" * 64
        )
    finally:
        await pool.close()
    r = await api.get(f"/v1/incidents/{inc}/ledger")
    assert r.status_code == 200 and r.json()["source"] == "fold", r.text
    assert r.json()["items"] == (await _fold_ledger(api, inc))["items"]
