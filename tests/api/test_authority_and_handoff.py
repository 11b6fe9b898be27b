"""Invariants 4 and 9 at the directive API (in-process app, real Kafka + PostgreSQL).

- Authority is a versioned runbook file (hash recorded): during an incident the
  holder may only narrow it; a wider one is a proposal that a second commander or
  admin who does not hold the conn approves, in the ledger; inline content only in
  development; a widening written around the API changes nothing.
- A takeover names the exact hash of the current packet (no default); only the
  addressed team accepts, also before the handoff packet is published.
- A close is a stop committed before the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from api_support import ROOT, TOKENS_FILE, Api, of_incident, read_log, running_api, settings_for
from kafka_support import LedgerWriter, current

from conn_core.authority import parse_authority
from conn_runtime.kafka import EventProducer
from conn_runtime.stops import active_stop
from conn_schemas import events as ev
from conn_schemas.values import Actor, Role

RUNBOOK = (ROOT / "runbooks" / "checkout-authority.yaml").read_bytes()
WIDE = RUNBOOK.replace(b"max_consequential_steps: 10", b"max_consequential_steps: 30")
NARROW = RUNBOOK.replace(b"regions: [us-east, eu-west]", b"regions: [us-east]")


def runbooks(tmp: Path) -> Path:
    d = tmp / "runbooks"
    d.mkdir()
    (d / "checkout-authority.yaml").write_bytes(RUNBOOK)
    (d / "checkout-wide.yaml").write_bytes(WIDE)
    (d / "checkout-narrow.yaml").write_bytes(NARROW)
    return d


def code(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else ""


async def authority(api: Api, inc: str) -> dict[str, Any]:
    r = await api.get(f"/v1/incidents/{inc}/authority")
    assert r.status_code == 200, r.text
    return dict(r.json()["authority"])


async def test_the_holder_narrows_and_a_second_person_approves_a_widening(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str, tmp_path: Path
) -> None:
    settings = settings_for(
        kafka_bootstrap, conn_topics, fresh_database, conn_runbooks_dir=runbooks(tmp_path)
    )
    async with running_api(settings) as api:
        inc = await api.open_incident()
        base = await authority(api, inc)
        assert (base["name"], base["version"]) == ("checkout-outage", "2026-11-22.1")
        assert base["source_file"] == "runbooks/checkout-authority.yaml"
        assert base["sha256"] == parse_authority(RUNBOOK)[1]
        path = f"/v1/incidents/{inc}/authority"

        # The holder's wider boundary is only a proposal.
        r = await api.post(path, "alice", {"runbook": "checkout-wide", "detail": "more room"})
        assert r.status_code == 202, r.text
        proposal = r.json()
        assert proposal["status"] == "proposed"
        assert any("max_consequential_steps raised" in w for w in proposal["widenings"])
        wide_sha = parse_authority(WIDE)[1]
        assert proposal["content_sha256"] == wide_sha
        assert (await authority(api, inc))["sha256"] == base["sha256"], "not in force"
        approve = f"{path}/proposals/{proposal['proposal_id']}/approve"

        # The holder can never approve (widen) their own boundary; nor an observer,
        # a specialist, or anyone naming other content than what was proposed.
        assert code(await api.post(approve, "alice", {"content_sha256": wide_sha})) == (
            403,
            "authority_widening_needs_approval",
        )
        assert code(await api.post(approve, "olive", {"content_sha256": wide_sha})) == (
            403,
            "forbidden",
        )
        assert code(await api.post(approve, "dana", {"content_sha256": wide_sha})) == (
            403,
            "forbidden",
        )
        assert code(await api.post(approve, "root", {"content_sha256": "0" * 64})) == (
            422,
            "invalid_base_position",
        )
        # A second authorized person approves the exact content: it is declared.
        r = await api.post(approve, "root", {"content_sha256": wide_sha, "detail": "ok"})
        assert r.status_code == 200, r.text
        now = await authority(api, inc)
        assert now["sha256"] == wide_sha and now["proposals"][0]["approved_by"] == "root"
        assert code(await api.post(approve, "root", {"content_sha256": wide_sha})) == (
            409,
            "duplicate_directive",
        )
        r = await api.get(f"/v1/incidents/{inc}")
        assert r.json()["holder"]["identity"] == "alice", "the conn stays with the holder"

        # Narrowing needs nobody else.
        r = await api.post(path, "alice", {"runbook": "checkout-narrow"})
        assert r.status_code == 201 and r.json()["status"] == "declared", r.text
        assert (await authority(api, inc))["regions"] == ["us-east"]
        # Only the holder declares, and only a commander.
        assert code(await api.post(path, "rob", {"runbook": "checkout-narrow"}))[0] == 403

        # A widening written around the API's checks (straight to Kafka, signed with the
        # directive-api's own key, e.g. by a buggy replica) changes nothing: the fold
        # re-checks it. (A signer not entitled to AuthorityDeclared is refused earlier,
        # by the signature check: tests/integration/test_trust_boundary.py.)
        producer = EventProducer(api.settings.kafka, producer_name="rogue")
        await producer.start()
        try:
            wide, sha = parse_authority(WIDE, holder="alice")
            event = ev.new_event(
                ev.AuthorityDeclared,
                incident_id=inc,
                payload=ev.AuthorityDeclaredPayload(
                    authority=wide, source_file="x.yaml", content_sha256=sha
                ),
                actor=Actor(kind="human", id="alice", roles=(Role.COMMANDER,)),
                producer=producer.principal,
            )
            pos = await producer.append(event)
        finally:
            await producer.stop()
        assert await api.app.state.runtime.view.wait_applied(pos, 10)
        after = await authority(api, inc)
        assert after["regions"] == ["us-east"] and after["ignored_records"] == 1

        log = of_incident(await read_log(kafka_bootstrap, settings.kafka.topics.events), inc)
        types = [e.event_type for e in log]
        assert types.count("AuthorityChangeProposed") == 1
        assert types.count("AuthorityChangeApproved") == 1
        approved = [e for e in log if e.event_type == "AuthorityDeclared" and e.payload.approval]
        assert len(approved) == 1 and approved[0].actor.id == "root"


async def test_inline_authority_content_only_in_development(
    kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    tokens = yaml.safe_load(TOKENS_FILE.read_text())["tokens"]
    settings = settings_for(
        kafka_bootstrap,
        conn_topics,
        fresh_database,
        conn_env="production",
        conn_pagerduty_webhook_secret="a-real-secret-for-the-test-only",
        conn_api_tokens=json.dumps(tokens),
    )
    settings.api.conn_api_tokens_file = None
    async with running_api(settings) as api:
        inc = await api.open_incident(runbook=False)
        r = await api.post(f"/v1/incidents/{inc}/authority", "alice", {"content": RUNBOOK.decode()})
        assert code(r) == (422, "invalid_request") and "development" in r.json()["error"]["message"]
        r = await api.post(
            f"/v1/incidents/{inc}/authority", "alice", {"runbook": "checkout-authority"}
        )
        assert r.status_code == 201, r.text


async def inject_packet(api: Api, inc: str, team: str | None) -> str:
    """What the packager publishes: a packet describing the incident's current head."""
    state = api.app.state.runtime.view.state(inc)
    sha = f"{state.sequence:02d}" * 32
    kafka = api.settings.kafka
    # Signed by the packager principal, the only one entitled to publish packets.
    async with LedgerWriter(current(), kafka.kafka_bootstrap_servers, kafka.topics) as writer:
        _, pos = await writer.append_at(
            ev.new_event(
                ev.TakeoverPacketPublished,
                incident_id=inc,
                payload=ev.TakeoverPacketPublishedPayload(
                    packet_id=f"{inc}@{state.sequence}",
                    packet_sha256=sha,
                    to_team=team,
                    trigger="handoff" if team else "hold",
                    ledger_sequence=state.sequence,
                    ledger_hash="00" * 32,
                ),
                actor=Actor.service("packager"),
                producer="packager",
            )
        )
    assert await api.app.state.runtime.view.wait_applied(pos, 10)
    return sha


async def test_only_the_addressed_team_accepts_the_current_packet_by_its_hash(api: Api) -> None:
    inc = await api.open_incident()
    take = f"/v1/incidents/{inc}/takeover"
    assert (
        await api.post(f"/v1/incidents/{inc}/hold", "alice", {"detail": "x"})
    ).status_code == 200
    hold_packet = await inject_packet(api, inc, None)
    r = await api.get(f"/v1/incidents/{inc}/packet")
    assert r.json()["packet_sha256"] == hold_packet and r.json()["current"] is True
    assert code(await api.post(take, "dana", {})) == (422, "invalid_request"), "no default"

    r = await api.post(f"/v1/incidents/{inc}/handoff", "alice", {"to_team": "database-platform"})
    assert r.status_code == 200, r.text
    # The window before the handoff packet is published: the hold packet is still the
    # latest one, but rollback-authority is not the addressed team...
    r = await api.post(take, "rob", {"packet_sha256": hold_packet})
    assert code(r) == (403, "target_not_allowed")
    # ...and the addressed team must read the packet that shows the handoff.
    assert (await api.get(f"/v1/incidents/{inc}/packet")).json()["current"] is False
    r = await api.post(take, "dana", {"packet_sha256": hold_packet})
    assert code(r) == (409, "stale_base_position")

    handoff_packet = await inject_packet(api, inc, "database-platform")
    assert code(await api.post(take, "rob", {"packet_sha256": handoff_packet}))[0] == 403
    assert code(await api.post(take, "dana", {"packet_sha256": hold_packet})) == (
        409,
        "stale_base_position",
    )
    r = await api.post(take, "dana", {"packet_sha256": handoff_packet})
    assert r.status_code == 200 and r.json()["holder"] == "dana", r.text


async def test_a_close_is_a_stop_committed_before_the_answer(api: Api) -> None:
    inc = await api.open_incident()
    assert await active_stop(api.app.state.runtime.db, inc) is None
    r = await api.post(f"/v1/incidents/{inc}/close", "alice", {"resolution": "fixed"})
    assert r.status_code == 200, r.text
    stop = await active_stop(api.app.state.runtime.db, inc)
    assert stop is not None and "closed" in stop.reason
