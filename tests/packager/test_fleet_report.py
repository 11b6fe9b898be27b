"""Fleet SLIs end to end (real Kafka + PostgreSQL): the API's report, the packager's
conn_fleet_* gauges, the read model and `conn replay` (from the topic) all agree, and
forged or duplicated records change none of them."""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from api.api_support import running_api, settings_for
from fixtures_services import Proc, free_port
from kafka_support import Identities, LedgerWriter, current
from packager.packager_scenario import ALICE, mixed_state, recovered
from packager.test_packager_live import _caught_up, _env, _kafka, _start, _wait_for
from prometheus_client.parser import text_string_to_metric_families

from conn_core import fleet
from conn_packager import fleet as fleet_gauges
from conn_readmodel import queries as readmodel
from conn_readmodel import replay as replay_mod
from conn_readmodel.store import create_pool
from conn_runtime.settings import Topics
from conn_schemas.events import IncidentClosed, IncidentClosedPayload, new_event

pytestmark = pytest.mark.integration
SCHEMA = "conn_read"


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("conn_fleet_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


async def test_report_equals_metrics_and_replay_reproduces_it(
    kafka_bootstrap: str,
    conn_topics: Topics,
    fresh_database: str,
    start_process: Any,
    trust: Identities,
) -> None:
    kafka = _kafka(kafka_bootstrap, conn_topics)
    port = free_port()
    env = {
        **_env(kafka_bootstrap, conn_topics, fresh_database, port),
        "CONN_PACKAGER_FLEET_INTERVAL": "0.5",
    }
    proc: Proc = _start(start_process, env, port)
    ok = recovered("inc-ok")
    ok.add(IncidentClosed, IncidentClosedPayload(resolution="drained, recovered"))
    late = recovered("inc-late")  # eight days later: the trend has two weeks
    late.events = [
        e.model_copy(update={"occurred_at": e.occurred_at + timedelta(days=8)}) for e in late.events
    ]
    scripts = [mixed_state("inc-mixed"), ok, recovered("inc-handoff", handoff=True), late]
    events = [e for s in scripts for e in s.events]
    async with LedgerWriter(current(), kafka_bootstrap, conn_topics) as writer:
        for event in events:
            await writer.append(event)
        # adversarial: a duplicate (same event_id) and forged records that would close
        # the mixed incident and settle it if anyone counted them
        await writer.append(ok.events[3])
        forged_close = new_event(
            IncidentClosed,
            incident_id="inc-mixed",
            payload=IncidentClosedPayload(resolution="forged"),
            actor=ALICE,
            producer="directive-api",
        )
        await writer.append(forged_close, as_="executor")  # not entitled to close
    expected = fleet.fleet_report(events)
    assert expected["totals"]["incidents"] == 4 and expected["totals"]["closed"] == 1
    assert [w["week"] for w in expected["weeks"]] == ["2026-W47", "2026-W49"]

    pool = await create_pool(fresh_database)
    try:
        # scripted events + the duplicate + 2 packets (hold on inc-mixed, handoff)
        await _wait_for(lambda: _caught_up(pool, kafka, len(events) + 3), proc=proc)
        from_read_model = await readmodel.fleet_report(pool, schema=SCHEMA)
        assert from_read_model["totals"]["incidents"] == 4
        # the packets the packager published are in the ledger too: escalation counts them
        assert from_read_model["totals"]["escalated"] >= 2

        async with running_api(settings_for(kafka_bootstrap, conn_topics, fresh_database)) as api:

            async def api_caught_up() -> Any:
                r = await api.get("/v1/fleet/report", "olive")
                assert r.status_code == 200, r.text
                body = r.json()
                return body if body == json.loads(json.dumps(from_read_model)) else None

            api_report = await _wait_for(api_caught_up, proc=proc)
            # every reader role may read it; an integration identity may not
            for who in ("alice", "dana", "root"):
                assert (await api.get("/v1/fleet/report", who)).status_code == 200
            assert (await api.get("/v1/fleet/report", "alertbot")).status_code == 403
            for bad in ("not-a-date", "2026-13-01", "x" * 100, "2026-11-22\x00"):
                r = await api.get("/v1/fleet/report", "olive", params={"since": bad})
                assert r.status_code == 422, (bad, r.text)
            r = await api.get(
                "/v1/fleet/report", "olive", params={"since": "2026-12-01", "until": "2026-11-01"}
            )
            assert r.status_code == 422
            r = await api.get("/v1/fleet/report", "olive", params={"since": "2026-11-23"})
            assert r.json()["totals"]["incidents"] == 1

        # the packager's gauges show the same totals (after a refresh past the catch-up)
        want = fleet_gauges.samples(api_report["totals"])
        refreshed_after = time.time()

        async def gauges_current() -> bool:
            got = _scrape(port)
            fresh = got.get(("conn_fleet_refreshed_timestamp_seconds", ()), 0) > refreshed_after
            return fresh and all(_same(got.get(k, math.nan), v) for k, v in want.items())

        await _wait_for(gauges_current, proc=proc)
        got = _scrape(port)
        assert got[("conn_fleet_safe_completion_rate", ())] == 1.0
        assert got[("conn_fleet_incidents", ())] == 4

        # `conn replay --fleet-report` recomputes it from the topic alone
        replayed = json.loads(await replay_mod.export_fleet_report(kafka, "json"))
        assert replayed == api_report
    finally:
        await pool.close()
