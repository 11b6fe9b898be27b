"""Prometheus metrics of the directive API (served at /metrics with the shared ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DIRECTIVES = Counter(
    "conn_api_directives_total",
    "Directives answered by the API, by outcome (issued/refused/replayed) and reason",
    ["outcome", "reason"],
)
CONTROL = Counter(
    "conn_api_control_total", "Control verbs answered, by verb and outcome", ["verb", "outcome"]
)
ALERTS = Counter(
    "conn_api_alerts_total",
    "Alerts received, by source and outcome (appended/folded/ignored)",
    ["source", "outcome"],
)
APPROVALS = Counter(
    "conn_api_approvals_total",
    "Two-person rule votes answered by the API, by decision and outcome "
    "(recorded or a RefusalReason)",
    ["decision", "outcome"],
)
TIME_TO_APPROVAL = Histogram(
    "conn_api_time_to_approval_seconds",
    "From DirectiveIssued to the approval that completed its quorum",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
DRY_RUNS = Counter(
    "conn_api_dry_runs_total",
    "Dry runs answered (nothing is appended to the log)",
    ["outcome"],
)
REQUEST_SECONDS = Histogram(
    "conn_api_request_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SHED = Counter(
    "conn_api_shed_total",
    "Requests answered 503 overloaded (with Retry-After): in-flight limit, loop lag or backlog",
)
IN_FLIGHT = Gauge("conn_api_in_flight_requests", "Requests under /v1/ in flight (load shedding)")
SHED_BY = Counter(
    "conn_api_shed_by_reason_total",
    "Requests answered 503 overloaded by the middleware, by reason (in_flight, loop_lag)",
    ["reason"],
)
LOOP_LAG = Gauge(
    "conn_api_loop_lag_seconds",
    "Sustained event-loop lag (least overshoot of the last wake-ups; load shedding)",
)
