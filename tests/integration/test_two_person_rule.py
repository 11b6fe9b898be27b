"""The two-person rule against the whole pipeline (DESIGN.md invariant 11): the real
executor waits for the quorum of the exact decision packet, runs the step only then
(approve and execute are separate, attributable ledger facts), and records why a
pending directive was cancelled by a decline, a hold or the kill switch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from conn_localstack.ephemeral import Pipeline

pytestmark = pytest.mark.integration
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
DEV_TOKENS = yaml.safe_load((ROOT / "deploy" / "local" / "tokens.dev.yaml").read_text())
RUNBOOK = ROOT / "runbooks" / "checkout-authority.yaml"

RULE = b"""
approvals:
  - action: drain_worker_pool
    targets: [cache-invalidation]
    count: 2
    roles: [specialist, admin]
    expires_after: 900
"""
DRAIN = {"action": "drain_worker_pool", "pool": "cache-invalidation", "region": "us-east"}


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {DEV_TOKENS[who]}"}


async def eventually(check: Callable[[], Awaitable[T]], what: str, timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


class Bridge:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, path: str, who: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(path, json=body, headers=auth(who))

    async def open(self, rule: bytes = RULE) -> str:
        r = await self.post("/v1/incidents", "alice", {"title": "t", "service": "checkout"})
        assert r.status_code == 201, r.text
        inc = str(r.json()["incident_id"])
        r = await self.post(
            f"/v1/incidents/{inc}/authority",
            "alice",
            {"content": (RUNBOOK.read_bytes() + rule).decode()},
        )
        assert r.status_code == 201, r.text
        return inc

    async def sequence(self, inc: str) -> int:
        r = await self.http.get(f"/v1/incidents/{inc}", headers=auth("olive"))
        return int(r.json()["sequence"])

    async def direct(self, inc: str, action: dict[str, Any]) -> dict[str, Any]:
        body = {"action": action, "based_on_sequence": await self.sequence(inc)}
        r = await self.post(f"/v1/incidents/{inc}/directives", "alice", body)
        assert r.status_code == 202, r.text
        return dict(r.json())

    async def ledger(self, inc: str) -> list[dict[str, Any]]:
        r = await self.http.get(
            f"/v1/incidents/{inc}/ledger", params={"limit": 1000}, headers=auth("olive")
        )
        assert r.status_code == 200, r.text
        return [i["event"] for i in r.json()["items"]]

    async def wait_for(self, inc: str, kind: str, cid: str) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            for e in await self.ledger(inc):
                if e["event_type"] == kind and e.get("correlation_id") == cid:
                    return e
            return None

        return await eventually(found, f"{kind} of {cid}")

    async def approve(
        self, inc: str, cid: str, who: str, sha: str, decision: str = "approve"
    ) -> httpx.Response:
        return await self.post(
            f"/v1/incidents/{inc}/approvals/{cid}",
            who,
            {"decision": decision, "packet_sha256": sha, "detail": "checked"},
        )


async def test_the_executor_waits_for_the_quorum_and_cancels_on_decline_hold_and_kill(
    pipeline: Callable[..., Pipeline],
) -> None:
    p = pipeline("seed_outage")
    async with httpx.AsyncClient(base_url=p.api.url, timeout=30) as http:
        b = Bridge(http)

        # --- a decline cancels it, recorded by the executor --------------------------------
        inc = await b.open()
        issued = await b.direct(inc, DRAIN)
        cid, sha = issued["correlation_id"], issued["awaiting_approval"]["decision_packet_sha256"]
        r = await b.approve(inc, cid, "dana", sha, "decline")
        assert r.status_code == 200, r.text
        refused = await b.wait_for(inc, "DirectiveRefused", cid)
        assert refused["payload"]["reason"] == "approval_declined"
        assert refused["actor"]["id"] == "executor" or refused["actor"]["kind"] == "service"

        # --- a hold cancels it ---------------------------------------------------------------
        inc = await b.open()
        issued = await b.direct(inc, DRAIN)
        cid, sha = issued["correlation_id"], issued["awaiting_approval"]["decision_packet_sha256"]
        assert (await b.approve(inc, cid, "dana", sha)).status_code == 200
        r = await b.post(f"/v1/incidents/{inc}/hold", "alice", {"detail": "wait"})
        assert r.status_code == 200, r.text
        refused = await b.wait_for(inc, "DirectiveRefused", cid)
        assert refused["payload"]["reason"] == "incident_on_hold"
        r = await b.approve(inc, cid, "rob", sha)
        assert r.status_code == 409, r.text  # nothing left to approve

        # --- the kill switch cancels it --------------------------------------------------------
        inc = await b.open()
        issued = await b.direct(inc, DRAIN)
        cid = issued["correlation_id"]
        r = await b.post("/v1/kill-switch/engage", "root", {"reason": "drill"})
        assert r.status_code == 200, r.text
        try:
            refused = await b.wait_for(inc, "DirectiveRefused", cid)
            assert refused["payload"]["reason"] == "kill_switch_engaged"
        finally:
            r = await b.post("/v1/kill-switch/release", "root", {"reason": "drill over"})
            assert r.status_code == 200, r.text

        # --- an approval window that closes cancels it, with nothing else happening ----------
        inc = await b.open(RULE.replace(b"expires_after: 900", b"expires_after: 1"))
        issued = await b.direct(inc, DRAIN)
        cid, sha = issued["correlation_id"], issued["awaiting_approval"]["decision_packet_sha256"]
        refused = await b.wait_for(inc, "DirectiveRefused", cid)
        assert refused["payload"]["reason"] == "approval_expired"
        assert (await b.approve(inc, cid, "dana", sha)).status_code == 409

        # --- the quorum runs it; until then nothing happens ------------------------------------
        inc = await b.open()
        issued = await b.direct(inc, DRAIN)
        cid, sha = issued["correlation_id"], issued["awaiting_approval"]["decision_packet_sha256"]
        assert (await b.approve(inc, cid, "dana", sha)).status_code == 200
        # A note directive after it: once the executor recorded the note, it has handled the
        # drain and the first approval (one partition, in order) -- and not acted.
        note = await b.direct(inc, {"action": "update_incident_record", "note": "waiting"})
        await b.wait_for(inc, "IncidentRecordUpdated", note["correlation_id"])
        types = [e["event_type"] for e in await b.ledger(inc) if e.get("correlation_id") == cid]
        assert types == ["DirectiveIssued", "ApprovalRecorded"], types
        assert p.side_effects().get(cid, 0) == 0
        assert (await b.approve(inc, cid, "rob", sha)).status_code == 200
        await b.wait_for(inc, "StepSucceeded", cid)
        mine = [e for e in await b.ledger(inc) if e.get("correlation_id") == cid]
        order = [e["event_type"] for e in mine]
        assert order.index("ApprovalRecorded") < order.index("DirectiveAccepted")
        assert order.index("DirectiveAccepted") < order.index("StepStarted")
        approvers = [e["actor"]["id"] for e in mine if e["event_type"] == "ApprovalRecorded"]
        assert approvers == ["dana", "rob"]
        started = next(e for e in mine if e["event_type"] == "StepStarted")
        assert started["actor"]["kind"] == "service"
        assert p.side_effects()[cid] == 1
