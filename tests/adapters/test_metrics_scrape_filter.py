"""`ScrapeMetrics` parses only the sample lines of the series it reads
(`conn_adapters.metrics.samples_named`). Oracle: the parser over the whole exposition;
for the wanted names, the samples (name, labels, value) are the same, whatever else the
endpoint exposes (other series, HELP/TYPE lines, labels with escapes, histograms)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conn_adapters.metrics import DEFAULT_NAMES, EXTRA_NAMES, samples_named

WANTED = {*DEFAULT_NAMES.values(), *EXTRA_NAMES}


def samples(text: str) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in WANTED
    )


@given(
    regions=st.lists(
        st.text('ab-_ {}=,"\\\n', min_size=1, max_size=8), min_size=1, max_size=3, unique=True
    ),
    value=st.floats(allow_nan=False, allow_infinity=False),
)
def test_the_wanted_samples_are_the_same_as_from_the_whole_exposition(
    regions: list[str], value: float
) -> None:
    registry = CollectorRegistry(auto_describe=False)
    gauges = {
        name: Gauge(name, "doc", ["region"], registry=registry)
        for name in (
            "checkout_error_ratio",
            "checkout_queue_depth",
            "checkout_request_rate",
            "checkout_metrics_updated_timestamp_seconds",
            "checkout_error_ratio_other",
        )
    }
    requests = Counter("checkout_requests", "doc", ["region"], registry=registry)
    errors = Counter("checkout_errors", "doc", ["region"], registry=registry)
    latency = Histogram("checkout_latency_seconds", "doc", ["region"], registry=registry)
    for region in regions:
        for gauge in gauges.values():
            gauge.labels(region).set(value)
        requests.labels(region).inc(abs(value))
        errors.labels(region).inc(1)
        latency.labels(region).observe(abs(value))
    text = generate_latest(registry).decode()
    assert samples(samples_named(text, WANTED)) == samples(text)
    assert samples(text)  # something was wanted
