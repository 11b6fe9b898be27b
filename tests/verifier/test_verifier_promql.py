"""The PromQL path (a real Prometheus scraping the simulator) gives the same verdict
as the direct scrape for the seed outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fixtures_services import Proc
from kafka_support import LedgerWriter
from verifier_support import Bridge, adapters_for, incident_state, wait_for_snapshots

from conn_adapters.metrics import ScrapeMetrics
from conn_runtime.settings import Topics
from conn_schemas.values import DisableFlagRule, Verdict
from conn_verifier.plan import pending
from conn_verifier.verify import ReadPorts, run_verification

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def _wait_scraped(prom_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=prom_url) as client:
        while time.monotonic() < deadline:
            body = (
                await client.get(
                    "/api/v1/query",
                    params={
                        "query": 'checkout_metrics_updated_timestamp_seconds{region="eu-west"}'
                    },
                )
            ).json()
            if body["data"]["result"]:
                return
            await asyncio.sleep(0.2)
    raise AssertionError("prometheus has not scraped the simulator")


async def test_promql_and_direct_scrape_agree_on_the_seed_outage(
    simulator: Callable[..., Proc],
    verifier: Callable[..., Proc],
    prometheus: Callable[[str], str],
    producer: LedgerWriter,
    runbook: Path,
    kafka_bootstrap: str,
    conn_topics: Topics,
) -> None:
    sim = simulator("seed_outage", speed=120.0)
    prom_url = prometheus(sim.url)
    verifier(sim.url, CONN_METRICS_BACKEND="prometheus", CONN_PROMETHEUS_URL=prom_url)
    await _wait_scraped(prom_url)

    adapters = adapters_for(sim.url)
    scrape = ScrapeMetrics(sim.url + "/metrics")
    try:
        bridge = await Bridge(producer, runbook).open()
        step = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
        cid = await bridge.execute(step, adapters)
        # The same job, judged in-process through the direct scrape...
        state = await incident_state(kafka_bootstrap, conn_topics, bridge.incident_id)
        (job,) = pending(state)
        ports = ReadPorts(flags=adapters.flags, orchestrator=adapters.orchestrator, metrics=scrape)
        direct = await run_verification(job, ports)
    finally:
        await scrape.aclose()
        await adapters.aclose()
    # ...and by the verifier process through PromQL.
    (snap,) = await wait_for_snapshots(kafka_bootstrap, conn_topics, {cid})
    assert all(r.fresh for r in snap.payload.regions), snap.payload.detail
    assert all("query_time" in r.readings[0].extra for r in snap.payload.regions), "PromQL path"
    assert snap.payload.verdict is direct.verdict is Verdict.NOT_RECOVERED, (
        snap.payload.detail,
        direct.detail,
    )
