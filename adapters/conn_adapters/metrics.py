"""Metrics: direct scrape of a Prometheus /metrics endpoint, or PromQL queries.

Both read the simulator's metric names by default (`checkout_error_ratio`,
`checkout_queue_depth`, `checkout_request_rate`, freshness from
`checkout_metrics_updated_timestamp_seconds`); the names / queries are
configurable, so either works against a real service's metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conn_adapters._common import bounded, now_utc, raise_for_status
from conn_core.ports import MetricsReading, PortError

DEFAULT_NAMES: dict[str, str] = {
    "error_rate": "checkout_error_ratio",
    "queue_depth": "checkout_queue_depth",
    "request_rate": "checkout_request_rate",
    "observed_at": "checkout_metrics_updated_timestamp_seconds",
}
EXTRA_NAMES = ("checkout_requests_total", "checkout_errors_total")

DEFAULT_QUERIES: dict[str, str] = {
    field: f'{metric}{{region="{{region}}"}}' for field, metric in DEFAULT_NAMES.items()
}


class ScrapeMetrics:
    """The embedded default: GET a /metrics endpoint and parse the exposition format.
    Samples are selected by a `region` label (configurable)."""

    def __init__(
        self,
        url: str,
        *,
        names: Mapping[str, str] | None = None,
        region_label: str = "region",
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.names = DEFAULT_NAMES | dict(names or {})
        self.region_label = region_label
        self.timeout = timeout
        self._client = httpx.AsyncClient(timeout=timeout, headers=dict(headers or {}))

    async def aclose(self) -> None:
        await self._client.aclose()

    @bounded
    async def read_region(self, region: str) -> MetricsReading:
        response = await self._client.get(self.url)
        text = str(raise_for_status(response))
        wanted = {*self.names.values(), *EXTRA_NAMES}
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted and sample.labels.get(self.region_label) == region:
                    values[sample.name] = float(sample.value)
        missing = [
            f for f in ("error_rate", "queue_depth", "request_rate") if self.names[f] not in values
        ]
        if missing:
            raise PortError(f"{self.url}: no {missing} samples for region {region!r}")
        stamp = values.get(self.names["observed_at"])
        return MetricsReading(
            region=region,
            error_rate=max(0.0, values[self.names["error_rate"]]),
            queue_depth=max(0.0, values[self.names["queue_depth"]]),
            request_rate=max(0.0, values[self.names["request_rate"]]),
            observed_at=datetime.fromtimestamp(stamp, UTC) if stamp else now_utc(),
            extra={n: values[n] for n in EXTRA_NAMES if n in values},
        )


class PrometheusMetrics:
    """PromQL instant queries (GET /api/v1/query). Templates contain `{region}`;
    `region_queries` overrides them per region. `observed_at` is the value of the
    `observed_at` query (a freshness timestamp gauge) when configured, otherwise
    the oldest sample timestamp of the three values."""

    def __init__(
        self,
        base_url: str,
        *,
        queries: Mapping[str, str] | None = None,
        region_queries: Mapping[str, Mapping[str, str]] | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.queries = DEFAULT_QUERIES | dict(queries or {})
        self.region_queries = {r: dict(q) for r, q in (region_queries or {}).items()}
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=dict(headers or {})
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def query_for(self, field: str, region: str) -> str | None:
        template = self.region_queries.get(region, {}).get(field) or self.queries.get(field)
        return template.replace("{region}", region) if template else None

    async def _instant(self, query: str) -> tuple[float, float] | None:
        response = await self._client.get("/api/v1/query", params={"query": query})
        body: dict[str, Any] = raise_for_status(response)
        if body.get("status") != "success":
            raise PortError(f"PromQL {query!r}: {body.get('error')}", retriable=True)
        data = body["data"]
        if data["resultType"] == "vector":
            if not data["result"]:
                return None
            ts, value = data["result"][0]["value"]
        elif data["resultType"] == "scalar":
            ts, value = data["result"]
        else:
            raise PortError(f"PromQL {query!r}: unsupported result type {data['resultType']}")
        return float(ts), float(value)

    @bounded
    async def read_region(self, region: str) -> MetricsReading:
        fields = ("error_rate", "queue_depth", "request_rate", "observed_at")
        queries = {f: self.query_for(f, region) for f in fields}
        results = await asyncio.gather(
            *(self._instant(q) if q else asyncio.sleep(0, None) for q in queries.values())
        )
        got = dict(zip(fields, results, strict=True))
        missing = [f for f in fields[:3] if got[f] is None]
        if missing:
            raise PortError(f"Prometheus has no data for {missing} in {region!r}", retriable=True)
        samples = {f: v for f, v in got.items() if v is not None}
        if "observed_at" in samples:
            observed = samples["observed_at"][1]
        else:
            observed = min(samples[f][0] for f in fields[:3])
        return MetricsReading(
            region=region,
            error_rate=max(0.0, samples["error_rate"][1]),
            queue_depth=max(0.0, samples["queue_depth"][1]),
            request_rate=max(0.0, samples["request_rate"][1]),
            observed_at=datetime.fromtimestamp(observed, UTC),
            extra={"query_time": min(samples[f][0] for f in fields[:3])},
        )
