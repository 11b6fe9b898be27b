"""The executor's gather reads every region's metrics in ONE scrape when the port can
(`RegionsMetrics`, as the verifier's sampling rounds do) — and that is the same evidence:
for every page below, the Observation is equal to the one made with one `read_region`
per region (same readings, same errors under the same words, same order), while the
page is fetched once instead of once per region.

The page is served by an in-process httpx transport (no network); the adapter, its
parser and the gatherer are the real ones.
"""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import pytest

from conn_adapters.metrics import ScrapeMetrics
from conn_core.ports import Metrics, RegionsMetrics
from conn_executor.gather import Gatherer, plan_for_regions
from conn_schemas.observations import MetricsReading, Observation

REGIONS = ("eu-west", "us-east", "ap-south")
FRESH = time.time() - 1.0


def region_lines(region: str, *, fresh: bool = True, error_ratio: float = 0.01) -> list[str]:
    lines = [
        f'checkout_error_ratio{{region="{region}"}} {error_ratio}',
        f'checkout_queue_depth{{region="{region}"}} 5',
        f'checkout_request_rate{{region="{region}"}} 100',
        f'checkout_requests_total{{region="{region}"}} 1000',
    ]
    if fresh:
        lines.append(f'checkout_metrics_updated_timestamp_seconds{{region="{region}"}} {FRESH}')
    return lines


PAGES: dict[str, tuple[int, str]] = {
    "every region readable": (200, "\n".join(line for r in REGIONS for line in region_lines(r))),
    "one region absent": (200, "\n".join(region_lines("eu-west") + region_lines("us-east"))),
    "one region without its freshness signal": (
        200,
        "\n".join(
            region_lines("eu-west")
            + region_lines("us-east", fresh=False)
            + region_lines("ap-south")
        ),
    ),
    "a NaN value (no data, never 0)": (
        200,
        "\n".join(
            region_lines("eu-west", error_ratio=math.nan)
            + region_lines("us-east")
            + region_lines("ap-south")
        ),
    ),
    "the page fails": (503, "unavailable"),
    "an empty page": (200, ""),
}


class PerRegion:
    """The same adapter seen only through `read_region` (the one-call-per-region path)."""

    def __init__(self, metrics: ScrapeMetrics) -> None:
        self.metrics = metrics

    async def read_region(self, region: str) -> MetricsReading:
        return await self.metrics.read_region(region)


def scraper(status: int, body: str, fetched: list[str]) -> ScrapeMetrics:
    def serve(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(status, text=body)

    metrics = ScrapeMetrics("http://target.invalid/metrics", timeout=5.0)
    metrics._client = httpx.AsyncClient(transport=httpx.MockTransport(serve), timeout=5.0)
    return metrics


async def gather(metrics: Metrics) -> Observation:
    gatherer = Gatherer(flags=None, orchestrator=None, metrics=metrics, timeout=5.0)  # type: ignore[arg-type]
    return await gatherer.observe(plan_for_regions(None, REGIONS))


@pytest.mark.parametrize("page", sorted(PAGES))
def test_one_scrape_gives_the_same_observation_as_one_read_per_region(page: str) -> None:
    status, body = PAGES[page]
    one_scrape: list[str] = []
    per_region: list[str] = []

    async def both() -> tuple[Observation, Observation]:
        scraping = scraper(status, body, one_scrape)
        reading = scraper(status, body, per_region)
        assert isinstance(scraping, RegionsMetrics)
        assert not isinstance(PerRegion(reading), RegionsMetrics)
        try:
            return await gather(scraping), await gather(PerRegion(reading))
        finally:
            await scraping.aclose()
            await reading.aclose()

    got, expected = asyncio.run(both())
    assert got == expected
    assert len(one_scrape) == 1
    assert len(per_region) == len(REGIONS)
    # The oracle is not vacuous: every page yields readings or errors for each region.
    assert len(got.metrics) + len(got.errors) == len(REGIONS)


def test_every_case_is_exercised() -> None:
    """The pages cover a full reading, an absent region, a refused (age unknown) reading,
    no data and a failed scrape: both paths are compared on each."""

    async def observe(page: str) -> Observation:
        status, body = PAGES[page]
        metrics = scraper(status, body, [])
        try:
            return await gather(metrics)
        finally:
            await metrics.aclose()

    full = asyncio.run(observe("every region readable"))
    assert [m.region for m in full.metrics] == sorted(REGIONS) and not full.errors
    stale = asyncio.run(observe("one region without its freshness signal"))
    assert len(stale.metrics) == 2 and "us-east" in stale.errors[0]
    failed = asyncio.run(observe("the page fails"))
    assert not failed.metrics and len(failed.errors) == len(REGIONS)
    nan = asyncio.run(observe("a NaN value (no data, never 0)"))
    assert next(m for m in nan.metrics if m.region == "eu-west").error_rate is None
