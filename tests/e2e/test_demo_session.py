"""The demo's guided session, headless, against the whole pipeline of real
processes: the ledger must be exactly what the scenario demands."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from rich.console import Console

from conn_demo.session import load_tokens, run_session
from conn_readmodel import queries as readmodel
from conn_readmodel import store

pytestmark = pytest.mark.integration

EXPECTED_TYPES = [
    "IncidentOpened",
    "AuthorityDeclared",
    # gather state
    "DirectiveIssued", "DirectiveAccepted", "StateGathered",
    # disable the canary rule in eu-west
    "DirectiveIssued", "StateGathered", "DirectiveAccepted", "StepStarted", "StepSucceeded",
    "IncidentRecordUpdated", "VerificationSnapshot",
    # explicit verify
    "DirectiveIssued", "DirectiveAccepted", "VerificationSnapshot",
    # drain cache-invalidation in us-east
    "DirectiveIssued", "StateGathered", "DirectiveAccepted", "StepStarted", "StepSucceeded",
    "IncidentRecordUpdated", "VerificationSnapshot",
    # orders-db restart (reserved) and a stale directive, both refused at the API
    "DirectiveRefused", "DirectiveRefused",
    # restart pricing-cache in us-east -> mixed -> hold -> packet
    "DirectiveIssued", "StateGathered", "DirectiveAccepted", "StepStarted", "StepSucceeded",
    "IncidentRecordUpdated", "VerificationSnapshot", "TakeoverPacketPublished",
    # handoff to database-platform, its packet, dana accepts
    "TakeoverRequested", "TakeoverPacketPublished", "TakeoverAccepted",
]  # fmt: skip

TWO_PERSON_TYPES = [
    # dana's orders-db restart waits for priya's approval, then runs and is verified
    "DirectiveIssued", "ApprovalRecorded", "StateGathered", "DirectiveAccepted", "StepStarted",
    "StepSucceeded", "IncidentRecordUpdated", "VerificationSnapshot",
]  # fmt: skip
"""After the takeover (packets the packager republishes meanwhile left aside: their
timing relative to the executor's records is not the scenario's)."""


def test_the_demo_session_leaves_exactly_the_expected_ledger(pipeline, fresh_database) -> None:  # type: ignore[no-untyped-def]
    p = pipeline("seed_outage")
    out = io.StringIO()
    result = run_session(p.api.url, console=Console(file=out, width=140), timeout=120)
    events = result.events()

    types = result.types()
    cut = types.index("TakeoverAccepted") + 1
    assert types[:cut] == EXPECTED_TYPES, out.getvalue()[-3000:]
    later = [t for t in types[cut:] if t != "TakeoverPacketPublished"]
    assert later == TWO_PERSON_TYPES, out.getvalue()[-3000:]

    # The two-person rule: dana issued, priya approved the exact decision packet, and
    # only then did the executor accept and run it -- separate, attributable facts.
    restart_db = next(
        e
        for e in events
        if e["event_type"] == "DirectiveIssued"
        and e["payload"]["action"].get("tier") == "orders-db"
    )
    cid = restart_db["correlation_id"]
    assert restart_db["actor"]["id"] == "dana"
    mine = [e for e in events if e.get("correlation_id") == cid]
    approval = next(e for e in mine if e["event_type"] == "ApprovalRecorded")
    assert approval["actor"]["id"] == "priya" and approval["actor"]["team"] == "database-platform"
    assert result.decision_packet is not None
    assert approval["payload"]["packet_sha256"] == result.decision_packet["packet_sha256"]
    assert result.decision_packet["packet"]["issued_by"] == "dana"
    assert result.decision_packet["packet"]["risk"] == "high"
    order = [e["event_type"] for e in mine]
    assert order.index("ApprovalRecorded") < order.index("DirectiveAccepted")

    refusals = [(r["reason"], r["refused_by"]) for r in result.refusals]
    assert refusals == [
        ("reserved_to_team", "directive-api"),
        ("stale_base_position", "directive-api"),
    ]

    snapshots = [e["payload"] for e in events if e["event_type"] == "VerificationSnapshot"]
    assert [s["verdict"] for s in snapshots][:4] == ["recovered", "recovered", "recovered", "mixed"]
    mixed = snapshots[3]
    by_region = {r["region"]: r for r in mixed["regions"]}
    assert by_region["us-east"]["healthy"] and not by_region["eu-west"]["healthy"]
    assert all(r["fresh"] for r in mixed["regions"])

    # Exactly one side effect per consequential step at the simulator.
    steps = [e["correlation_id"] for e in events if e["event_type"] == "StepStarted"]
    effects = p.side_effects()
    assert [effects.get(cid) for cid in steps] == [1, 1, 1, 1]

    # Minimal disclosure: the incident record got each step's redacted summary,
    # while the full tool output stays in the ledger's audit payload only.
    notes = httpx.get(p.simulator.url + "/sim/incident-record", timeout=5).json()
    succeeded = [e["payload"] for e in events if e["event_type"] == "StepSucceeded"]
    # The record adapter escapes notes for Slack mrkdwn (&, <, > as entities): compare
    # what Slack displays.
    shown = [
        n["text"].split("] ", 1)[1].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        for n in notes
    ]
    assert shown == [s["summary"] for s in succeeded]
    for note, step in zip(notes, succeeded, strict=True):
        raw_output = step["result"]["output"]
        assert raw_output, "the audit payload keeps the tool's full output"
        named = {str(v) for v in step["action"].values()} | {"checkout-pricing/canary-10pct"}
        for leaf in _leaves(raw_output):
            if isinstance(leaf, str) and len(leaf) >= 8 and leaf not in named:
                assert leaf not in note["text"], f"raw tool output leaked: {leaf}"

    # The takeover packet dana accepted, as the packager's read model holds it.
    accepted = next(e for e in events if e["event_type"] == "TakeoverAccepted")
    assert accepted["actor"]["id"] == "dana"
    packet_row = asyncio.run(
        _packet(
            fresh_database,
            p.base_env()["CONN_READ_SCHEMA"],
            result.incident_id,
            accepted["payload"]["packet_sha256"],
        )
    )
    assert packet_row is not None
    assert packet_row["packet_sha256"] == accepted["payload"]["packet_sha256"]
    packet = packet_row["packet"]
    assert packet["trigger"] == "handoff" and packet["to_team"] == "database-platform"
    assert packet["hold"]["reason"] == "verification"
    last = packet["last_step"]
    assert last["action"] == {
        "action": "restart_dependency_tier", "tier": "pricing-cache", "region": "us-east",
    }  # fmt: skip
    assert last["status"] == "succeeded" and last["verdict"] == "mixed"
    regions = {r["region"]: r for r in packet["regions"]}
    assert regions["us-east"]["healthy"] is True and regions["eu-west"]["healthy"] is False
    assert all(r["age_seconds"] is not None for r in regions.values())
    assert [d["refusal"] for d in packet["blocked_directives"]] == [
        "reserved_to_team", "stale_base_position",
    ]  # fmt: skip
    assert packet["pending_directives"] == []
    assert [d["correlation_id"] for d in packet["partial_changes"]] == [steps[2]]
    assert packet["authority"]["name"] == "checkout-outage"
    assert packet["authority"]["holder"] == "alice"
    request_seq = next(
        entry["sequence"]
        for entry in result.ledger
        if entry["event"]["event_type"] == "TakeoverRequested"
    )
    assert packet["ledger_head"]["sequence"] == request_seq
    head_entry = next(e for e in result.ledger if e["sequence"] == request_seq)
    assert packet["ledger_head"]["hash"] == head_entry["hash"]

    # The fleet report over this run (its only incident): the answer README's
    # definitions give for the scenario (3 consequential steps, each fully traced;
    # 2 of 7 requests caught at the API; escalated, 1 packet accepted, still open).
    r = httpx.get(
        p.api.url + "/v1/fleet/report",
        headers={"Authorization": f"Bearer {load_tokens()['olive']}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    fleet = r.json()["totals"]
    assert (fleet["incidents"], fleet["closed"], fleet["safe_completion_rate"]) == (1, 0, None)
    assert fleet["caught_by_reason"] == {"reserved_to_team": 1, "stale_base_position": 1}
    assert (fleet["caught"], fleet["requests"]) == (2, 8)
    assert (fleet["consequential_steps"], fleet["traces"], fleet["traces_complete"]) == (4, 4, 4)
    assert fleet["unauthorized_side_effects"] == fleet["duplicate_side_effects"] == 0
    assert (fleet["escalated"], fleet["packets_accepted"], fleet["packets_judged"]) == (1, 1, 0)
    assert fleet["false_actions"] == 0
    assert fleet["time_to_first_action_seconds"]["count"] == 1
    assert fleet["time_to_verified_recovery_seconds"]["count"] == 1


def _leaves(doc: object) -> list[object]:
    if isinstance(doc, dict):
        return [leaf for v in doc.values() for leaf in _leaves(v)]
    if isinstance(doc, list):
        return [leaf for v in doc for leaf in _leaves(v)]
    return [doc]


async def _packet(dsn: str, schema: str, incident: str, sha: str):  # type: ignore[no-untyped-def]
    pool = await store.create_pool(dsn)
    try:
        latest = await readmodel.latest_packet(pool, incident, schema=schema)
        assert latest is not None
        row = await pool.fetchrow(
            f"SELECT * FROM {readmodel.check_schema(schema)}.takeover_packets "
            "WHERE incident_id = $1 AND packet_sha256 = $2",
            incident,
            sha,
        )
        return dict(row) if row else None
    finally:
        await pool.close()
