"""Directives at the API: every refusal reason is answered precisely AND recorded
as DirectiveRefused(refused_by="directive-api"); the Idempotency-Key contract."""

from __future__ import annotations

import asyncio
from typing import Any

from api_support import ROOT, Api, of_incident, read_log

from conn_core.authority import parse_authority
from conn_schemas.values import ActionType

DRAIN_US = {"action": "drain_worker_pool", "pool": "checkout-workers", "region": "us-east"}
RESTART_PRICING = {
    "action": "restart_dependency_tier",
    "tier": "pricing-cache",
    "region": "eu-west",
}


async def _refused(api: Api, r: Any, status: int, reason: str, bootstrap: str, inc: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == reason
    cid = body["error"]["detail"]["correlation_id"]
    events = of_incident(await read_log(bootstrap, api.settings.kafka.topics.events), inc)
    recorded = [e for e in events if e.correlation_id == cid]
    assert len(recorded) == 1, recorded
    assert recorded[0].event_type == "DirectiveRefused"
    assert recorded[0].payload.reason.value == reason
    assert recorded[0].payload.refused_by == "directive-api"
    assert not [e for e in events if e.event_type == "DirectiveIssued" and e.correlation_id == cid]


async def test_each_refusal_reason_is_answered_and_logged(api: Api, kafka_bootstrap: str) -> None:
    inc = await api.open_incident(runbook=False)
    # no authority yet
    r = await api.direct(inc, "alice", {"action": "gather_state"})
    await _refused(api, r, 409, "no_authority_declared", kafka_bootstrap, inc)
    r = await api.post(f"/v1/incidents/{inc}/authority", "alice", {"runbook": "checkout-authority"})
    assert r.status_code == 201, r.text
    # schema: free text is never an action
    r = await api.post(
        f"/v1/incidents/{inc}/directives",
        "alice",
        {"action": "please disable the canary rule in eu-west", "based_on_sequence": 2},
    )
    await _refused(api, r, 422, "invalid_directive", kafka_bootstrap, inc)
    r = await api.post(
        f"/v1/incidents/{inc}/directives",
        "alice",
        {"text": "drain the pool", "based_on_sequence": 2, "action": {"action": "gather_state"}},
    )
    await _refused(api, r, 422, "invalid_directive", kafka_bootstrap, inc)
    # who
    r = await api.direct(inc, "olive", {"action": "gather_state"})
    await _refused(api, r, 403, "role_may_not_direct", kafka_bootstrap, inc)
    r = await api.direct(inc, "alertbot", {"action": "gather_state"})
    await _refused(api, r, 403, "not_authenticated_human", kafka_bootstrap, inc)
    r = await api.direct(inc, "dana", {"action": "gather_state"})
    await _refused(api, r, 403, "not_conn_holder", kafka_bootstrap, inc)
    # base position
    r = await api.direct(inc, "alice", {"action": "gather_state"}, based_on=10_000)
    await _refused(api, r, 422, "invalid_base_position", kafka_bootstrap, inc)
    r = await api.direct(inc, "alice", {"action": "gather_state"}, based_on=1)
    await _refused(api, r, 409, "stale_base_position", kafka_bootstrap, inc)
    # authority boundary
    bad_rule = {
        "action": "disable_flag_rule",
        "flag": "checkout-pricing",
        "rule": "all",
        "region": "eu-west",
    }
    r = await api.direct(inc, "alice", bad_rule)
    await _refused(api, r, 403, "target_not_allowed", kafka_bootstrap, inc)
    r = await api.direct(inc, "alice", {**DRAIN_US, "region": "ap-south"})
    await _refused(api, r, 403, "region_not_allowed", kafka_bootstrap, inc)
    orders = {"action": "restart_dependency_tier", "tier": "orders-db", "region": "us-east"}
    r = await api.direct(inc, "alice", orders)
    await _refused(api, r, 403, "reserved_to_team", kafka_bootstrap, inc)
    # one step at a time
    r = await api.direct(inc, "alice", DRAIN_US)
    assert r.status_code == 202, r.text
    r = await api.direct(inc, "alice", RESTART_PRICING)
    await _refused(api, r, 409, "previous_step_unverified", kafka_bootstrap, inc)
    # hold
    r = await api.post(f"/v1/incidents/{inc}/hold", "alice", {"detail": "looks wrong"})
    assert r.status_code == 200, r.text
    r = await api.direct(inc, "alice", RESTART_PRICING)
    await _refused(api, r, 409, "incident_on_hold", kafka_bootstrap, inc)
    # read-only directives stay allowed on hold
    r = await api.direct(inc, "alice", {"action": "gather_state"})
    assert r.status_code == 202, r.text
    r = await api.post(f"/v1/incidents/{inc}/resume", "alice", {"detail": "ok"})
    assert r.status_code == 200, r.text
    # kill switch
    r = await api.post("/v1/kill-switch/engage", "root", {"reason": "drill"})
    assert r.status_code == 200, r.text
    r = await api.direct(inc, "alice", RESTART_PRICING)
    await _refused(api, r, 409, "kill_switch_engaged", kafka_bootstrap, inc)
    r = await api.post("/v1/kill-switch/release", "root", {"reason": "drill over"})
    assert r.status_code == 200, r.text
    r = await api.direct(inc, "alice", RESTART_PRICING)
    assert r.status_code == 202, r.text
    # closed
    r = await api.post(f"/v1/incidents/{inc}/close", "alice", {"resolution": "done"})
    assert r.status_code == 200, r.text
    r = await api.direct(inc, "alice", {"action": "gather_state"})
    await _refused(api, r, 409, "incident_closed", kafka_bootstrap, inc)
    # unknown incident: 404, nothing appended for a phantom incident
    r = await api.direct("INC-nope", "alice", {"action": "gather_state"}, based_on=0)
    assert r.status_code == 404 and r.json()["error"]["code"] == "incident_not_open"
    assert not of_incident(
        await read_log(kafka_bootstrap, api.settings.kafka.topics.events), "INC-nope"
    )


async def test_authority_limits_action_and_blast_radius(api: Api, kafka_bootstrap: str) -> None:
    inc = await api.open_incident(runbook=False)
    content = """
name: tight
version: "1"
holder: {identity: x}
regions: [us-east]
allowed:
  - action: gather_state
  - action: drain_worker_pool
blast_radius: {max_consequential_steps: 0}
"""
    r = await api.post(
        f"/v1/incidents/{inc}/authority", "alice", {"content": content, "source_file": "tight.yaml"}
    )
    assert r.status_code == 201, r.text
    r = await api.direct(inc, "alice", {"action": "update_incident_record", "note": "hi"})
    await _refused(api, r, 403, "action_not_allowed", kafka_bootstrap, inc)
    r = await api.direct(inc, "alice", DRAIN_US)
    await _refused(api, r, 403, "blast_radius_exceeded", kafka_bootstrap, inc)
    r = await api.post(f"/v1/incidents/{inc}/authority", "alice", {"content": "- not a mapping"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_authority"


async def test_accepted_directive_is_logged_with_position(api: Api, kafka_bootstrap: str) -> None:
    inc = await api.open_incident()
    r = await api.direct(inc, "alice", DRAIN_US, extra={"rationale": "restart everything now"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["folded"] and body["sequence"] == 3
    events = of_incident(await read_log(kafka_bootstrap, api.settings.kafka.topics.events), inc)
    issued = [e for e in events if e.event_type == "DirectiveIssued"]
    assert [e.correlation_id for e in issued] == [body["correlation_id"]]
    assert issued[0].actor.id == "alice" and issued[0].payload.action.pool == "checkout-workers"
    # the ledger read reflects it at once (read-your-writes) with a hash chain head
    r = await api.get(f"/v1/incidents/{inc}/ledger", params={"event_type": "DirectiveIssued"})
    assert [i["event"]["correlation_id"] for i in r.json()["items"]] == [body["correlation_id"]]
    r = await api.get(f"/v1/incidents/{inc}/ledger", params={"limit": 1, "after": 1})
    page = r.json()
    assert [i["sequence"] for i in page["items"]] == [2] and page["next_after"] == 2
    assert page["head"]["sequence"] == 3
    r = await api.get(f"/v1/incidents/{inc}/directives/{body['correlation_id']}/decision-packet")
    assert r.status_code == 200, r.text
    packet = r.json()
    authority, _ = parse_authority((ROOT / "runbooks" / "checkout-authority.yaml").read_bytes())
    want = authority.criteria_for(ActionType.DRAIN_WORKER_POOL).model_dump(mode="json")
    assert packet["verification_criteria"] == want
    assert packet["risk"]["blast_radius"]["limits"]["max_drained_pools_per_region"] == 1
    assert "scale pool checkout-workers" in packet["rollback_hint"]


async def test_idempotency_key_contract(api: Api, kafka_bootstrap: str) -> None:
    inc = await api.open_incident()
    seq = await api.position(inc)
    body = {"action": DRAIN_US, "based_on_sequence": seq}
    path = f"/v1/incidents/{inc}/directives"
    key = {"Idempotency-Key": "retry-1"}
    first = await api.post(path, "alice", body, headers=key)
    again = await api.post(path, "alice", body, headers=key)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json()["correlation_id"] == again.json()["correlation_id"]
    assert first.json()["position"] == again.json()["position"]
    different = await api.post(path, "alice", {**body, "rationale": "other"}, headers=key)
    assert different.status_code == 422, different.text
    assert different.json()["error"]["code"] == "idempotency_key_reused"
    # concurrent requests with one key: exactly one wins, all see its answer
    body2 = {"action": {"action": "gather_state"}, "based_on_sequence": seq}
    answers = await asyncio.gather(
        *(api.post(path, "alice", body2, headers={"Idempotency-Key": "race"}) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    assert len({a.json()["correlation_id"] for a in answers}) == 1
    # a refusal is also replayed, not re-appended
    stale = {"action": {"action": "gather_state"}, "based_on_sequence": 1}
    r1 = await api.post(path, "alice", stale, headers={"Idempotency-Key": "stale"})
    r2 = await api.post(path, "alice", stale, headers={"Idempotency-Key": "stale"})
    assert r1.status_code == r2.status_code == 409
    # the replayed refusal keeps the one error shape; the replay is marked in `detail`
    assert set(r2.json()) == {"error"}, r2.text
    assert r2.json()["error"]["detail"]["replayed"] is True
    assert (
        r2.json()["error"]["detail"]["correlation_id"]
        == r1.json()["error"]["detail"]["correlation_id"]
    )
    events = of_incident(await read_log(kafka_bootstrap, api.settings.kafka.topics.events), inc)
    issued = [e for e in events if e.event_type == "DirectiveIssued"]
    assert len(issued) == 2, [e.payload.action for e in issued]
    assert len([e for e in events if e.event_type == "DirectiveRefused"]) == 1
