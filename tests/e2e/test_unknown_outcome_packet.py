"""Invariants 2 and 9 end to end: a restart that really lands at the target but
answers after the executor's timeout is reported as an unknown outcome (not a
failure), verified against the tier generation gathered before it, and listed
in the takeover packet's partially completed changes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import yaml

from conn_localstack.ephemeral import ROOT

pytestmark = pytest.mark.integration

TOKENS = yaml.safe_load((ROOT / "deploy" / "local" / "tokens.dev.yaml").read_text())


def call(api: str, who: str, method: str, path: str, body: Any = None) -> Any:
    r = httpx.request(
        method,
        api + path,
        json=body,
        headers={"Authorization": f"Bearer {TOKENS[who]}"},
        timeout=30,
    )
    assert r.status_code < 300, r.text
    return r.json()


def ledger(api: str, incident: str) -> list[dict[str, Any]]:
    return [
        e["event"]
        for e in call(api, "olive", "GET", f"/v1/incidents/{incident}/ledger?limit=1000")["items"]
    ]


def wait_for(api: str, incident: str, check: Any, what: str, timeout: float = 120) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        events = ledger(api, incident)
        if check(events):
            return events
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}: {[e['event_type'] for e in events]}"
        )
        time.sleep(0.3)


def test_a_restart_that_lands_but_times_out_is_unknown_verified_and_in_the_packet(
    pipeline: Any,
) -> None:
    p = pipeline("seed_outage", env={"CONN_EXECUTOR_STEP_TIMEOUT": "1"})
    api = p.api.url
    r = httpx.post(p.simulator.url + "/sim/faults", json={"mutation_delay_seconds": 4}, timeout=5)
    r.raise_for_status()
    inc = call(api, "alice", "POST", "/v1/incidents", {"title": "t", "service": "checkout"})[
        "incident_id"
    ]
    call(api, "alice", "POST", f"/v1/incidents/{inc}/authority", {"runbook": "checkout-authority"})
    seq = call(api, "olive", "GET", f"/v1/incidents/{inc}")["sequence"]
    restart = {"action": "restart_dependency_tier", "tier": "pricing-cache", "region": "us-east"}
    issued = call(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives",
        {"action": restart, "based_on_sequence": seq},
    )
    key = issued["correlation_id"]

    def packet_with_it(events: list[dict[str, Any]]) -> bool:
        return any(e["event_type"] == "TakeoverPacketPublished" for e in events)

    events = wait_for(api, inc, packet_with_it, "the hold packet")
    mine = [e for e in events if e["correlation_id"] == key]
    types = [e["event_type"] for e in mine]
    assert "StepOutcomeUnknown" in types and "StepFailed" not in types, types
    assert p.side_effects().get(key) == 1, "it landed, exactly once"
    (snapshot,) = [e for e in mine if e["event_type"] == "VerificationSnapshot"]
    (check,) = snapshot["payload"]["control_plane"]
    pre = next(
        e
        for e in mine
        if e["event_type"] == "StateGathered" and e["payload"]["purpose"] == "pre_step"
    )
    before = pre["payload"]["observation"]["tiers"][0]["generation"]
    assert f"generation > {before}" in check["expected"], check
    assert snapshot["payload"]["verdict"] != "recovered", "eu-west is still down"

    packet = call(api, "olive", "GET", f"/v1/incidents/{inc}/packet")
    assert packet["current"] is True
    body = packet["packet"]
    if body is None:  # the packager's read model catches up
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline:
            time.sleep(0.3)
            body = call(api, "olive", "GET", f"/v1/incidents/{inc}/packet")["packet"]
    assert body is not None
    partial = [(d["correlation_id"], d["status"]) for d in body["partial_changes"]]
    assert partial == [(key, "outcome_unknown")]
    assert body["last_step"]["status"] == "outcome_unknown"
