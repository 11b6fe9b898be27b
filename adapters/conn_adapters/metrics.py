"""Metrics: direct scrape of a Prometheus /metrics endpoint, or PromQL queries.

Both read the simulator's metric names by default (`checkout_error_ratio`,
`checkout_queue_depth`, `checkout_request_rate`, freshness from
`checkout_metrics_updated_timestamp_seconds`); the names / queries are
configurable, so either works against a real service's metrics.

No data is never health: a value the source cannot give (a missing series, NaN
such as an error ratio 0/0 with no traffic, an infinity) is reported as None,
never as 0; and a reading without its freshness signal is refused (PortError),
never stamped with the time of the query.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conn_adapters._common import bounded, raise_for_status
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


def finite(value: float | None) -> float | None:
    """The value if it is a usable non-negative number, else None (no data)."""
    if value is None or not math.isfinite(value):
        return None
    return max(0.0, value)


def freshness(value: float | None, what: str) -> datetime:
    """The source's own freshness timestamp; never substituted by the time we asked."""
    if value is None or not math.isfinite(value) or value <= 0:
        raise PortError(
            f"{what}: no freshness signal (got {value!r}): a reading of unknown age is not used"
        )
    return datetime.fromtimestamp(value, UTC)


_SAMPLE_NAME = re.compile(r"[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def samples_named(text: str, names: set[str]) -> str:
    """The sample lines of an exposition whose metric name is one of `names` (comments
    and every other series dropped): the parser, a Python loop per character, then
    reads a dozen lines instead of the whole endpoint. The samples it yields for
    those names are the same; a malformed line of an unrelated series no longer
    fails the read."""
    kept = []
    for line in text.splitlines():
        found = _SAMPLE_NAME.match(line)
        if found is not None and found.group(1) in names:
            kept.append(line)
    return "\n".join(kept) + "\n"


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
    async def _scrape(self, regions: frozenset[str]) -> dict[str, dict[str, float]]:
        """One GET of the page: the samples of every region in `regions`."""
        response = await self._client.get(self.url)
        text = str(raise_for_status(response))
        wanted = {*self.names.values(), *EXTRA_NAMES}
        values: dict[str, dict[str, float]] = {region: {} for region in regions}
        for family in text_string_to_metric_families(samples_named(text, wanted)):
            for sample in family.samples:
                region = sample.labels.get(self.region_label)
                if sample.name in wanted and region in values:
                    values[region][sample.name] = float(sample.value)
        return values

    def _reading(self, region: str, values: Mapping[str, float]) -> MetricsReading:
        fields = ("error_rate", "queue_depth", "request_rate")
        if not any(self.names[f] in values for f in fields):
            raise PortError(f"{self.url}: no samples for region {region!r}")
        observed = freshness(
            values.get(self.names["observed_at"]),
            f"{self.url}: {self.names['observed_at']} for region {region!r}",
        )
        return MetricsReading(
            region=region,
            error_rate=finite(values.get(self.names["error_rate"])),
            queue_depth=finite(values.get(self.names["queue_depth"])),
            request_rate=finite(values.get(self.names["request_rate"])),
            observed_at=observed,
            extra={n: values[n] for n in EXTRA_NAMES if n in values and math.isfinite(values[n])},
        )

    @bounded
    async def read_region(self, region: str) -> MetricsReading:
        values = await self._scrape(frozenset({region}))
        return self._reading(region, values[region])

    async def read_regions(self, regions: Sequence[str]) -> dict[str, MetricsReading | PortError]:
        """Every region from ONE scrape (the page holds them all), each judged on its own
        exactly as `read_region` would: a region without samples or without its freshness
        signal gets its PortError, the others their reading. A scrape that fails is that
        failure for every region (no reading is ever made up)."""
        try:
            values = await self._scrape(frozenset(regions))
        except PortError as exc:
            failed: dict[str, MetricsReading | PortError] = dict.fromkeys(regions, exc)
            return failed
        out: dict[str, MetricsReading | PortError] = {}
        for region in regions:
            try:
                out[region] = self._reading(region, values[region])
            except PortError as exc:
                out[region] = exc
            except (KeyError, ValueError, TypeError) as exc:  # as `bounded` translates them
                out[region] = PortError(
                    f"ScrapeMetrics.read_regions: unexpected response: {type(exc).__name__}: {exc}"
                )
        return out


class PrometheusMetrics:
    """PromQL instant queries (GET /api/v1/query). Templates contain `{region}`;
    `region_queries` overrides them per region. `observed_at` is the value of the
    `observed_at` query: a freshness timestamp of the source (a gauge such as
    `*_updated_timestamp_seconds`, or `timestamp(<raw selector>)`). It is required:
    the timestamp of an instant query's result is the evaluation time, so without a
    freshness signal a reading's age is unknown and it is refused (PortError)."""

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
        if all(got[f] is None for f in fields[:3]):
            raise PortError(f"Prometheus has no data for region {region!r}", retriable=True)
        stamp = got["observed_at"]
        observed = freshness(
            stamp[1] if stamp is not None else None,
            f"Prometheus {queries['observed_at'] or '(no observed_at query)'} for {region!r}",
        )

        def value(field: str) -> float | None:
            sample = got[field]
            return finite(sample[1]) if sample is not None else None

        asked = [sample[0] for sample in got.values() if sample is not None]
        return MetricsReading(
            region=region,
            error_rate=value("error_rate"),
            queue_depth=value("queue_depth"),
            request_rate=value("request_rate"),
            observed_at=observed,
            extra={"query_time": min(asked)},
        )
