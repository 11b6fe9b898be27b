"""One Metrics contract: direct scrape of /metrics, and PromQL on a real Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from adapter_support import Sim

from conn_adapters.metrics import PrometheusMetrics, ScrapeMetrics
from conn_core.ports import Metrics, PortError


class MetricsContract:
    async def test_implements_the_port(self, metrics: Any) -> None:
        assert isinstance(metrics, Metrics)

    async def test_seed_outage_in_both_regions(self, metrics: Metrics) -> None:
        for region in ("us-east", "eu-west"):
            reading = await metrics.read_region(region)
            assert reading.region == region
            assert 0.1 < reading.error_rate <= 1.0
            assert reading.queue_depth > 300 and reading.request_rate > 50
            age = datetime.now(UTC) - reading.observed_at
            assert timedelta(seconds=-5) < age < timedelta(seconds=120)

    async def test_unknown_region_is_a_port_error(self, metrics: Metrics) -> None:
        with pytest.raises(PortError):
            await metrics.read_region("ap-south")


class TestScrapeMetrics(MetricsContract):
    @pytest.fixture
    async def metrics(self, sim: Sim) -> AsyncIterator[ScrapeMetrics]:
        adapter = ScrapeMetrics(sim.url + "/metrics", timeout=5)
        yield adapter
        await adapter.aclose()

    async def test_frozen_source_shows_its_age(self, metrics: ScrapeMetrics, sim: Sim) -> None:
        sim.reset("frozen_metrics")
        sim.advance(130)
        first = await metrics.read_region("us-east")
        await asyncio.sleep(0.05)
        sim.advance(60)
        second = await metrics.read_region("us-east")
        assert second.observed_at == first.observed_at
        assert second.error_rate == first.error_rate

    async def test_demo_path_is_visible(self, metrics: ScrapeMetrics, sim: Sim) -> None:
        sim.reset("partial_mixed")
        auth = {"Authorization": "sim-admin-token"}
        feature = sim.http.get(
            "/api/admin/projects/default/features/checkout-pricing", headers=auth
        ).json()
        env = next(e for e in feature["environments"] if e["name"] == "eu-west")
        sid = next(s["id"] for s in env["strategies"] if s["title"] == "canary-10pct")
        sim.http.patch(
            f"/api/admin/projects/default/features/checkout-pricing/environments/eu-west/strategies/{sid}",
            json=[{"op": "replace", "path": "/disabled", "value": True}],
            headers=auth,
        )
        sim.advance(600)
        assert (await metrics.read_region("eu-west")).error_rate < 0.02
        assert (await metrics.read_region("us-east")).error_rate > 0.05


@pytest.mark.integration
class TestPrometheusMetrics(MetricsContract):
    @pytest.fixture
    async def metrics(self, prometheus_url: str, sim: Sim) -> AsyncIterator[PrometheusMetrics]:
        adapter = PrometheusMetrics(prometheus_url, timeout=5)
        for _ in range(100):  # first scrapes land within a few seconds
            try:
                await adapter.read_region("eu-west")
                break
            except PortError:
                await asyncio.sleep(0.2)
        yield adapter
        await adapter.aclose()

    async def test_observed_at_is_the_freshness_gauge(self, metrics: PrometheusMetrics) -> None:
        reading = await metrics.read_region("us-east")
        assert reading.extra["query_time"] >= reading.observed_at.timestamp() - 1
