"""Invariant 6 at the metrics adapters: no data is never health. A value the source
cannot give (NaN such as an error ratio 0/0 with no traffic, an infinity, a missing
series) is reported as None — never 0 — and a reading without its freshness signal
is refused, never stamped with the time of the query. Real HTTP: a /metrics
endpoint served on loopback, and a real Prometheus."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from adapter_support import Sim

from conn_adapters.metrics import PrometheusMetrics, ScrapeMetrics
from conn_core.ports import PortError
from conn_core.verdict import judge
from conn_schemas.values import Verdict, VerificationCriteria


def exposition(now: float) -> str:
    return "\n".join(
        [
            "# TYPE checkout_error_ratio gauge",
            'checkout_error_ratio{region="eu-west"} NaN',
            'checkout_error_ratio{region="us-east"} 0.01',
            "# TYPE checkout_queue_depth gauge",
            'checkout_queue_depth{region="eu-west"} +Inf',
            'checkout_queue_depth{region="us-east"} 3',
            "# TYPE checkout_request_rate gauge",
            'checkout_request_rate{region="eu-west"} 0',
            'checkout_request_rate{region="us-east"} 40',
            "# TYPE checkout_requests_total counter",
            'checkout_requests_total{region="eu-west"} NaN',
            "# TYPE checkout_metrics_updated_timestamp_seconds gauge",
            f'checkout_metrics_updated_timestamp_seconds{{region="eu-west"}} {now}',
            "",  # us-east has no freshness signal at all
        ]
    )


@pytest.fixture
def metrics_endpoint() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(time.time()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


async def test_scrape_never_turns_nan_or_infinity_into_zero(metrics_endpoint: str) -> None:
    adapter = ScrapeMetrics(metrics_endpoint, timeout=5)
    try:
        reading = await adapter.read_region("eu-west")
        assert reading.error_rate is None and reading.queue_depth is None
        assert reading.request_rate == 0.0
        assert "checkout_requests_total" not in reading.extra
        # ...and the verdict built from such readings is never "recovered"
        samples = {
            "eu-west": [reading, reading.model_copy(update={"observed_at": reading.observed_at})]
        }
        j = judge(
            VerificationCriteria(samples=1),
            samples,
            [],
            step_time=reading.observed_at.replace(year=2000),
            now=reading.observed_at,
        )
        assert j.verdict is not Verdict.RECOVERED and "no data" in j.detail
    finally:
        await adapter.aclose()


async def test_scrape_never_uses_the_query_time_as_freshness(metrics_endpoint: str) -> None:
    adapter = ScrapeMetrics(metrics_endpoint, timeout=5)
    try:
        with pytest.raises(PortError, match="no freshness signal"):
            await adapter.read_region("us-east")
    finally:
        await adapter.aclose()


@pytest.mark.integration
class TestPrometheus:
    @pytest.fixture
    async def ready(self, prometheus_url: str, sim: Sim) -> AsyncIterator[str]:
        adapter = PrometheusMetrics(prometheus_url, timeout=5)
        for _ in range(100):  # first scrapes land within a few seconds
            try:
                await adapter.read_region("eu-west")
                break
            except PortError:
                await asyncio.sleep(0.2)
        await adapter.aclose()
        yield prometheus_url

    async def test_a_nan_ratio_is_no_data(self, ready: str) -> None:
        # 0/0: what an error ratio query returns for a region with no traffic
        adapter = PrometheusMetrics(
            ready, queries={"error_rate": 'checkout_queue_depth{region="{region}"} * 0 / 0'}
        )
        try:
            reading = await adapter.read_region("eu-west")
            assert reading.error_rate is None
            assert reading.queue_depth is not None and reading.queue_depth > 0
        finally:
            await adapter.aclose()

    async def test_a_missing_freshness_signal_is_refused(self, ready: str) -> None:
        adapter = PrometheusMetrics(
            ready, queries={"observed_at": 'no_such_freshness_gauge{region="{region}"}'}
        )
        try:
            with pytest.raises(PortError, match="no freshness signal"):
                await adapter.read_region("eu-west")
        finally:
            await adapter.aclose()
