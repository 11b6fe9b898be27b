"""The two-person rule at the API (DESIGN.md invariant 11), on real Kafka + PostgreSQL:
what an approver sees (the decision packet and its hash), and every approval the
rule does not allow answered with a clear 4xx and nothing appended."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from api_support import ROOT, Api, of_incident, read_log
from kafka_support import LedgerWriter

from conn_core.state import DirectiveStatus
from conn_schemas import events as ev
from conn_schemas.values import Actor, DrainWorkerPool

RUNBOOK = (ROOT / "runbooks" / "checkout-authority.yaml").read_bytes()
RULE = b"""
approvals:
  - action: drain_worker_pool
    targets: [cache-invalidation]
    count: 2
    roles: [specialist, admin]
    expires_after: 600
"""
DRAIN = {"action": "drain_worker_pool", "pool": "cache-invalidation", "region": "us-east"}


def code(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else ""


async def incident_with_pending(api: Api, rule: bytes = RULE) -> tuple[str, str, str]:
    inc = await api.open_incident(runbook=False)
    r = await api.post(
        f"/v1/incidents/{inc}/authority", "alice", {"content": (RUNBOOK + rule).decode()}
    )
    assert r.status_code == 201, r.text
    r = await api.direct(inc, "alice", DRAIN)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["awaiting_approval"]["required"] == 2
    cid = body["correlation_id"]
    r = await api.get(f"/v1/incidents/{inc}/approvals")
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["correlation_id"] == cid and item["status"] == "awaiting"
    assert item["packet_sha256"] == body["awaiting_approval"]["decision_packet_sha256"]
    return inc, cid, item["packet_sha256"]


async def vote(
    api: Api, inc: str, cid: str, who: str, sha: str, decision: str = "approve", detail: str = ""
) -> Any:
    return await api.post(
        f"/v1/incidents/{inc}/approvals/{cid}",
        who,
        {"decision": decision, "packet_sha256": sha, "detail": detail},
    )


async def test_quorum_of_distinct_entitled_people_who_did_not_issue_it(api: Api) -> None:
    inc, cid, sha = await incident_with_pending(api)
    item = (await api.get(f"/v1/incidents/{inc}/approvals")).json()["items"][0]
    packet = item["packet"]
    assert packet["action"] == DRAIN and packet["issued_by"] == "alice"
    assert packet["preconditions"] and packet["risk"] == "medium"
    assert packet["verification"]["max_queue_depth"] == 200
    assert {e["region"] for e in packet["evidence"]} == {"us-east", "eu-west"}
    assert "undo" in packet

    assert code(await vote(api, inc, cid, "alice", sha)) == (403, "role_may_not_direct")
    assert code(await vote(api, inc, cid, "olive", sha)) == (403, "role_may_not_direct")
    assert code(await vote(api, inc, cid, "dana", "ab" * 32)) == (409, "stale_base_position")
    r = await vote(api, inc, cid, "dana", sha)
    assert r.status_code == 200, r.text
    assert (r.json()["approvals"], r.json()["quorum"]) == (1, False)
    assert code(await vote(api, inc, cid, "dana", sha)) == (409, "duplicate_directive")
    r = await vote(api, inc, cid, "rob", sha)
    assert r.status_code == 200, r.text
    assert (r.json()["approvals"], r.json()["quorum"]) == (2, True)
    assert code(await vote(api, inc, cid, "root", sha)) == (409, "duplicate_directive")

    events = of_incident(
        await read_log(
            api.settings.kafka.kafka_bootstrap_servers, api.settings.kafka.topics.events
        ),
        inc,
    )
    approvals = [e for e in events if e.event_type == "ApprovalRecorded"]
    assert [(e.actor.id, e.correlation_id) for e in approvals] == [("dana", cid), ("rob", cid)]
    assert all(e.payload.packet_sha256 == sha for e in approvals)  # type: ignore[attr-defined]
    assert all(e.producer.startswith("directive-api") for e in approvals)
    r = await api.get(f"/v1/incidents/{inc}/approvals")
    assert r.json()["items"][0]["status"] == "approved"


async def test_the_issuer_cannot_approve_even_when_entitled(api: Api) -> None:
    """alice (commander, incident-command) is entitled by role and team, but she issued it:
    403 `self_approval`, its own code. Whoever is not entitled keeps theirs: a specialist of
    another team and an observer get `role_may_not_direct`, not `self_approval`."""
    rule = RULE.replace(
        b"roles: [specialist, admin]",
        b"roles: [commander, specialist]\n    teams: [incident-command, database-platform]",
    )
    inc, cid, sha = await incident_with_pending(api, rule)
    r = await vote(api, inc, cid, "alice", sha)
    assert code(r) == (403, "self_approval"), r.text
    assert "a second person must approve it" in r.json()["error"]["message"]
    r = await vote(api, inc, cid, "rob", sha)  # specialist, rollback-authority: wrong team
    assert code(r) == (403, "role_may_not_direct"), r.text
    assert "team incident-command/database-platform" in r.json()["error"]["message"]
    r = await vote(api, inc, cid, "olive", sha)  # observer
    assert code(r) == (403, "role_may_not_direct"), r.text
    r = await api.get(f"/v1/incidents/{inc}/approvals")
    assert r.json()["items"][0]["counted"] == 0 and r.json()["items"][0]["votes"] == []
    r = await vote(api, inc, cid, "dana", sha)  # entitled, not the issuer: counted
    assert r.status_code == 200, r.text
    assert (r.json()["approvals"], r.json()["quorum"]) == (1, False)
    events = of_incident(
        await read_log(
            api.settings.kafka.kafka_bootstrap_servers, api.settings.kafka.topics.events
        ),
        inc,
    )
    votes = [e.actor.id for e in events if e.event_type in ("ApprovalRecorded", "ApprovalDeclined")]
    assert votes == ["dana"], "a refused vote appends nothing"


def test_every_refusal_reason_has_its_own_http_status() -> None:
    """A new RefusalReason is mapped on purpose (a missing one would fall back to 409)."""
    from conn_api.errors import REFUSAL_STATUS
    from conn_schemas.values import RefusalReason

    assert set(REFUSAL_STATUS) == set(RefusalReason)
    assert REFUSAL_STATUS[RefusalReason.SELF_APPROVAL] == 403


async def test_one_decline_blocks(api: Api) -> None:
    inc, cid, sha = await incident_with_pending(api)
    assert code(await vote(api, inc, cid, "dana", sha, "decline")) == (422, "invalid_request")
    r = await vote(api, inc, cid, "dana", sha, "decline", "replication lag too high")
    assert r.status_code == 200, r.text
    assert code(await vote(api, inc, cid, "rob", sha)) == (409, "approval_declined")
    r = await api.get(f"/v1/incidents/{inc}/approvals", params={"include_done": "true"})
    assert r.json()["items"][0]["status"] == "declined"


async def test_bad_requests_are_4xx(api: Api) -> None:
    inc, cid, sha = await incident_with_pending(api)
    assert code(await vote(api, inc, "no-such-directive", "dana", sha)) == (404, "not_found")
    r = await vote(api, inc, cid, "dana", "not-a-hash")
    assert r.status_code == 422
    r = await vote(api, inc, cid, "dana", sha, "maybe")
    assert r.status_code == 422
    r = await api.post(
        f"/v1/incidents/{inc}/approvals/{cid}", "dana", {"decision": "approve", "x": "\x00" * 10}
    )
    assert r.status_code == 422
    r = await api.get("/v1/incidents/nope/approvals")
    assert r.status_code == 404


async def test_a_vote_the_log_did_not_count_is_not_answered_as_recorded(
    api: Api, trust: Any, kafka_bootstrap: str, conn_topics: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decline racing the step's start: the API checked it on a view that had not yet
    folded the executor's StepStarted, appended it, and the fold (the arbiter) did not
    count it. The approver must hear 409 vote_not_counted, not 200 "declined"."""
    inc, cid, sha = await incident_with_pending(api)
    view = api.app.state.runtime.view
    lagging = copy.deepcopy(view.state(inc))  # the view as it was before the step started
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as writer:
        await writer.append(
            ev.new_event(
                ev.StepStarted,
                incident_id=inc,
                payload=ev.StepStartedPayload(
                    action=DrainWorkerPool(pool="cache-invalidation", region="us-east"),
                    idempotency_key=cid,
                    executor_id="executor-1",
                    fencing_token=1,
                ),
                actor=Actor.service("executor"),
                producer="executor",
                correlation_id=cid,
            )
        )
    for _ in range(200):  # bounded: until the API's own fold has the step started
        if view.state(inc).directives[cid].status is DirectiveStatus.STARTED:
            break
        await asyncio.sleep(0.05)
    assert view.state(inc).directives[cid].status is DirectiveStatus.STARTED
    # A current view refuses the decline before appending anything...
    assert code(await vote(api, inc, cid, "dana", sha, "decline", "too late")) == (
        409,
        "duplicate_directive",
    )
    # ...a lagging one lets it through to the log, where it does not count.
    live = view.state
    reads = iter([lagging])
    monkeypatch.setattr(view, "state", lambda incident: next(reads, None) or live(incident))
    r = await vote(api, inc, cid, "dana", sha, "decline", "replication lag too high")
    assert code(r) == (409, "vote_not_counted"), r.text
    monkeypatch.undo()
    assert view.state(inc).approvals[cid].declined_by is None
    declines = of_incident(
        await read_log(
            api.settings.kafka.kafka_bootstrap_servers, api.settings.kafka.topics.events
        ),
        inc,
        "ApprovalDeclined",
    )
    assert [e.actor.id for e in declines] == ["dana"]  # in the ledger, and not counted
