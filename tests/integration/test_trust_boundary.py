"""The trust boundary, end to end (DESIGN.md "A signed log", invariant 1), against one
running pipeline of real processes on the authenticated broker:

for EVERY event type, a well-formed record of that type written by a producer the
keyring does not entitle to it -- unsigned, signed with an unknown key, signed with a
valid key of another principal, a genuine signature replayed over altered bytes, under
the wrong Kafka key, or signed with the rightful principal's key that was retired
before the broker appended the record -- changes no state anywhere (the API's fold, the packager's
read model and packets, the executor's and the verifier's decisions), causes no side
effect at the simulator, and is dead-lettered with its reason by every consumer group
that owns processing. The attacker is another service with broker credentials that
allow it to write conn.events (and, for conn.control, the API's leaked broker
password): the broker lets the bytes in, the signature keeps them out.

One pipeline, many records (~175): CI time stays bounded.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kafka_support import Identities, prefix_of
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Forgery, forgeries, restamp

from conn_localstack.ephemeral import Pipeline
from conn_runtime.kafka import EventProducer, Position
from conn_runtime.settings import Topics
from conn_runtime.trust import write_keyring_file
from conn_schemas import events as ev
from conn_schemas.values import Actor, DrainWorkerPool, Role

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_support import DEV_TOKENS
from builders import one_of_each

pytestmark = pytest.mark.integration
T = TypeVar("T")
ALICE = Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command")
MALLORY = Actor(kind="human", id="mallory", roles=(Role.COMMANDER,), team="incident-command")
ROOT = Path(__file__).resolve().parents[2]


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, within: float = 90) -> T:
    deadline = time.monotonic() + within
    while True:
        got = await probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {DEV_TOKENS[who]}"}


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def forged_events(incident: str, based_on: int) -> list[ev.Envelope]:
    """One well-formed event of every type for the live incident, stamped as its rightful
    producer would write it -- each one meaningful if it were honoured: a consequential
    directive within the authority, an authority naming mallory as holder, a hold, a
    close, a failing snapshot, a packet, a kill switch..."""
    out: list[ev.Envelope] = []
    for event in one_of_each():
        if event.event_type in ("KillSwitchEngaged", "KillSwitchReleased"):
            target = event  # conn.control, _global
        elif isinstance(event, ev.DirectiveIssued):
            target = event.model_copy(
                update={
                    "incident_id": incident,
                    "correlation_id": f"forged-{uuid.uuid4().hex[:8]}",
                    "payload": ev.DirectiveIssuedPayload(
                        action=DrainWorkerPool(pool="cache-invalidation", region="us-east"),
                        based_on_sequence=based_on,
                    ),
                    "actor": ALICE,
                }
            )
        elif isinstance(event, ev.AuthorityDeclared):
            authority = event.payload.authority.model_copy(
                update={
                    "holder": event.payload.authority.holder.model_copy(
                        update={"identity": "mallory"}
                    )
                }
            )
            target = event.model_copy(
                update={
                    "incident_id": incident,
                    "payload": event.payload.model_copy(update={"authority": authority}),
                    "actor": MALLORY,
                }
            )
        else:
            target = event.model_copy(update={"incident_id": incident, "event_id": uuid.uuid4()})
        role = OWNER[target.event_type]
        out.append(restamp(target, PRINCIPAL_OF_ROLE[role], role))
    assert {e.event_type for e in out} == set(ev.EVENT_TYPES)
    return out


async def _committed(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    offsets = await admin.list_consumer_group_offsets(group)
    return {tp: om.offset for tp, om in offsets.items()}


async def _ends(trust: Identities, bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **trust.kafka_options("sre"))
    await consumer.start()
    try:
        await consumer._client.set_topics([topic])
        parts = consumer.partitions_for_topic(topic) or set()
        return dict(await consumer.end_offsets([TopicPartition(topic, p) for p in parts]))
    finally:
        await consumer.stop()


async def _dead_letters(
    trust: Identities, bootstrap: str, topics: Topics, at_least: int
) -> dict[tuple[str, int, int], set[tuple[str, str]]]:
    """(source topic, partition, offset) -> {(consumer, reason)} from conn.deadletter."""
    consumer = AIOKafkaConsumer(
        topics.deadletter,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **trust.kafka_options("sre"),
    )
    await consumer.start()
    out: dict[tuple[str, int, int], set[tuple[str, str]]] = defaultdict(set)
    count = 0
    try:
        deadline = time.monotonic() + 120
        while count < at_least:
            assert time.monotonic() < deadline, f"only {count} of {at_least} dead letters"
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    h = {k: v.decode() for k, v in r.headers}
                    where = (
                        h["dlq.source.topic"],
                        int(h["dlq.source.partition"]),
                        int(h["dlq.source.offset"]),
                    )
                    out[where].add((h["dlq.consumer"], h["dlq.reason"]))
                    count += 1
    finally:
        await consumer.stop()
    return out


async def test_no_unentitled_record_of_any_type_changes_anything(
    pipeline: Callable[..., Pipeline],
    trust: Identities,
    kafka_bootstrap: str,
    conn_topics: Topics,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    # Every principal's keyring entry also lists a key rotated out an hour ago: what
    # it signs now (the broker stamps the append time) must be refused as retired.
    keys = trust.keys.with_retired(ev.utcnow() - timedelta(hours=1))
    keyring = tmp_path / "keyring-with-retired-keys.yaml"
    write_keyring_file(keyring, keys.keyring)
    p = pipeline("seed_outage", keyring=keyring)
    prefix = prefix_of(conn_topics)
    http = httpx.AsyncClient(base_url=p.api.url, timeout=30)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **trust.kafka_options("admin"))
    await admin.start()
    try:
        # --- a live incident, through the real front door ---------------------------------
        r = await http.post(
            "/v1/incidents",
            json={"title": "checkout failing", "service": "checkout"},
            headers=_auth("alice"),
        )
        assert r.status_code == 201, r.text
        inc = r.json()["incident_id"]
        r = await http.post(
            f"/v1/incidents/{inc}/authority",
            json={"runbook": "checkout-authority"},
            headers=_auth("alice"),
        )
        assert r.status_code == 201, r.text
        before = (await http.get(f"/v1/incidents/{inc}", headers=_auth("olive"))).json()
        s0 = before["sequence"]

        # --- every type, forged every way -----------------------------------------------------
        events = forged_events(inc, s0)
        integration = EventProducer(
            trust.settings(kafka_bootstrap, conn_topics, "example-integration"),
            producer_name="attacker",
        )
        # conn.control accepts only the API's broker login: assume its password leaked.
        leaked = EventProducer(
            trust.settings(
                kafka_bootstrap, conn_topics, "example-integration", kafka_user="directive-api"
            ),
            producer_name="attacker-control",
        )
        sent: list[tuple[Forgery, ev.Envelope, Position]] = []
        await integration.start()
        await leaked.start()
        try:
            for event in events:
                control = event.incident_id == ev.GLOBAL_INCIDENT
                topic = conn_topics.control if control else conn_topics.events
                via = leaked if control else integration
                for forgery in forgeries(event, keys):
                    pos = await via.publish(
                        topic, forgery.key, forgery.value, forgery.headers, sign=False
                    )
                    sent.append((forgery, event, pos))
        finally:
            await integration.stop()
            await leaked.stop()
        on_events = [s for s in sent if s[2].topic == conn_topics.events]
        on_control = [s for s in sent if s[2].topic == conn_topics.control]
        assert len(on_events) > 100 and len(on_control) >= 10
        assert {f.reason for f, _, _ in sent} >= {
            "unsigned",
            "unknown_key",
            "not_entitled",
            "bad_signature",
            "key_mismatch",
            "key_retired",
        }

        # --- wait until every reader has been past all of them -----------------------------------
        ends = await _ends(trust, kafka_bootstrap, conn_topics.events)

        async def groups_past() -> bool:
            for group in (f"{prefix}conn-executor", f"{prefix}conn-verifier"):
                done = await _committed(admin, group)
                if any(done.get(tp, 0) < end for tp, end in ends.items() if end):
                    return False
            return True

        await eventually(groups_past, "executor and verifier groups past the forged records")
        schema = p.base_env()["CONN_READ_SCHEMA"]
        db = await asyncpg.connect(fresh_database)
        try:

            async def packager_past() -> bool:
                rows = await db.fetch(
                    f"SELECT partition, next_offset FROM {schema}.projection_offsets"
                )
                have = {r["partition"]: r["next_offset"] for r in rows}
                return all(have.get(tp.partition, 0) >= end for tp, end in ends.items() if end)

            await eventually(packager_past, "the packager's read model past the forged records")

            control_ends = await _ends(trust, kafka_bootstrap, conn_topics.control)
            total = sum(ends.values()) + sum(control_ends.values())

            async def api_past() -> bool:
                # Every record read, whatever became of it (independent of what is tested).
                text = (await http.get("/metrics")).text
                seen = _metric(text, "conn_records_consumed_total", consumer="directive-api-view")
                return seen >= total

            await eventually(api_past, "the API's fold past the forged records")

            # --- nothing changed anywhere --------------------------------------------------------
            after = (await http.get(f"/v1/incidents/{inc}", headers=_auth("olive"))).json()
            assert after["sequence"] == s0, "a forged record took a ledger position"
            assert {k: v for k, v in after.items() if k != "health"} == {
                k: v for k, v in before.items() if k != "health"
            }
            control = (await http.get("/v1/control", headers=_auth("olive"))).json()
            assert control["kill_switch"] is False, "a forged KillSwitchEngaged took effect"
            ledger = (await http.get(f"/v1/incidents/{inc}/ledger", headers=_auth("olive"))).json()
            forged_ids = {str(e.event_id) for e in events}
            assert len(ledger["items"]) == s0
            assert not forged_ids & {str(e["event"]["event_id"]) for e in ledger["items"]}

            rows = await db.fetch(
                f"SELECT event_id FROM {schema}.ledger_entries WHERE incident_id=$1", inc
            )
            assert len(rows) == s0, "the read model folded a forged record"
            assert not forged_ids & {str(r["event_id"]) for r in rows}
            packets = await db.fetchval(f"SELECT count(*) FROM {schema}.takeover_packets")
            snapshots = await db.fetchval(f"SELECT count(*) FROM {schema}.verification_snapshots")
            assert (packets, snapshots) == (0, 0)
            claims = await db.fetchval("SELECT count(*) FROM executor_claims")
            assert claims == 0, "the executor claimed a forged directive"
            assert p.side_effects() == {}, "a forged record caused a side effect"

            # --- dead-lettered with its reason, by every owner of processing ------------------
            owners = {conn_topics.events: {"executor", "verifier", "packager"}}
            owners[conn_topics.control] = {"executor-control"}
            expected = sum(len(owners[pos.topic]) for _, _, pos in sent)
            letters = await _dead_letters(trust, kafka_bootstrap, conn_topics, expected)
            for forgery, event, pos in sent:
                got = letters.get((pos.topic, pos.partition, pos.offset), set())
                want = {(c, forgery.reason) for c in owners[pos.topic]}
                assert want <= got, (event.event_type, forgery.name, got)

            text = (await http.get("/metrics")).text
            refused = _metric(text, "conn_records_untrusted_total", consumer="directive-api-view")
            assert refused == len(sent), "the API's fold skips and counts every forgery"

            # --- and the pipeline still does exactly what a genuine directive says --------------
            # (if any forged authority, hold, close, step or snapshot had been folded by the
            # executor, this directive would be refused; if a forged kill switch had, too)
            r = await http.post(
                f"/v1/incidents/{inc}/directives",
                json={
                    "action": {
                        "action": "disable_flag_rule",
                        "flag": "checkout-pricing",
                        "rule": "canary-10pct",
                        "region": "eu-west",
                    },
                    "based_on_sequence": s0,
                },
                headers=_auth("alice"),
            )
            assert r.status_code == 202, r.text
            cid = r.json()["correlation_id"]

            async def verified() -> bool:
                return bool(
                    await db.fetchval(
                        f"SELECT count(*) FROM {schema}.verification_snapshots "
                        "WHERE step_correlation_id=$1",
                        cid,
                    )
                )

            await eventually(verified, "the genuine step executed and verified")
            effects = p.side_effects()  # the step, and its incident-record note
            assert effects[cid] == 1 and {k.split("/")[0] for k in effects} == {cid}

            # --- while another service, signing as itself, keeps its supported way in -----------
            # (examples/publish_event.py: the published schemas and generic libraries only)
            example = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "examples" / "publish_event.py"),
                "hold",
                inc,
                "--detail",
                "payments sees a fraud spike",
                env={
                    **trust.env("example-integration"),
                    "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                    "CONN_TOPIC_PREFIX": prefix,
                    "CONN_PRINCIPAL": "example-integration",
                    "CONN_SIGNING_KEY_ID": trust.keys.key_ids["example-integration"],
                },
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            shown, _ = await asyncio.wait_for(example.communicate(), 120)
            assert example.returncode == 0, shown.decode()

            async def held() -> dict[str, Any] | None:
                state = (await http.get(f"/v1/incidents/{inc}", headers=_auth("olive"))).json()
                return state if state["hold"] else None

            state = await eventually(held, "the integration's hold request honoured")
            assert state["hold"]["detail"] == "payments sees a fraud spike"

            async def packet() -> int:
                return int(
                    await db.fetchval(f"SELECT count(*) FROM {schema}.takeover_packets") or 0
                )

            assert await eventually(packet, "a takeover packet for the hold") == 1
        finally:
            await db.close()

        # --- conn replay proves the chain, counts signers, reports every forgery -----------
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conn_readmodel.replay",
            "--quiet",
            env={
                **p.base_env(),
                **trust.env("sre"),
                "CONN_KEYRING_FILE": str(keyring),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "DATABASE_URL": fresh_database,
                "COLUMNS": "250",
                "PATH": "/usr/bin:/bin",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        text = out.decode()
        assert proc.returncode == 3, text
        assert f"{len(sent)} untrusted" in text, text
        for principal in ("directive-api", "executor", "verifier", "packager"):
            assert principal in text
        assert re.search(r"example-integration\W+1\W", text), text  # signed by it, folded
    finally:
        await admin.close()
        await http.aclose()
