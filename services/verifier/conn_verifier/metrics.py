"""Prometheus metrics of the verifier (served by the ops server at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SNAPSHOTS = Counter("conn_verifier_snapshots_total", "Verification snapshots appended", ["verdict"])
DURATION = Histogram(
    "conn_verifier_duration_seconds",
    "Time from the start of a verification (incl. settle) to its snapshot being appended",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
IN_FLIGHT = Gauge("conn_verifier_in_flight", "Verifications scheduled or running")
PORT_ERRORS = Counter(
    "conn_verifier_port_errors_total", "Failed read-only port calls during verification", ["port"]
)
FAILURES = Counter(
    "conn_verifier_failures_total",
    "Verifications abandoned (rescheduled on the next trigger or catch-up)",
    ["reason"],
)
