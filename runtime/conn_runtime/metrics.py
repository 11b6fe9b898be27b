"""Prometheus metrics shared by every service (service-specific ones live in the
service). Exposed on each service's ops server at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_CONSUMED = Counter(
    "conn_records_consumed_total", "Kafka records consumed", ["topic", "consumer"]
)
RECORDS_PRODUCED = Counter(
    "conn_records_produced_total", "Kafka records produced", ["topic", "event_type"]
)
RECORDS_DEAD_LETTERED = Counter(
    "conn_records_dead_lettered_total", "Records sent to the dead-letter topic", ["topic", "reason"]
)
CONSUMER_LAG = Gauge(
    "conn_consumer_lag_records",
    "Records behind the partition high-water mark",
    ["consumer", "topic", "partition"],
)
HANDLE_SECONDS = Histogram(
    "conn_handle_seconds",
    "Time to handle one consumed record",
    ["consumer"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
RECORDS_UNTRUSTED = Counter(
    "conn_records_untrusted_total",
    "Records refused by a reader because their signer is unknown, unproven or not "
    "entitled to them (never folded; dead-lettered by the consumer-group owners)",
    ["consumer", "reason"],
)
RECORDS_GIVEN_UP = Counter(
    "conn_records_given_up_total",
    "Trusted records a consumer gave up on for a reason that is not a dependency outage "
    "(handler_failed: the handler raised on every allowed attempt; admission_failed: "
    "decoding or verifying raised unexpectedly); dead-lettered by the consumer-group owners",
    ["consumer", "reason"],
)
PRODUCER_RESETS = Counter(
    "conn_producer_resets_total",
    "Producer clients replaced after an indefinite error (record too large, timeout)",
    ["producer"],
)
