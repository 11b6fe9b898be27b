"""The fleet SLIs (conn_core.fleet) as Prometheus gauges, `conn_fleet_*`.

Refreshed by a packager timer from the read model's ledger (all time, all incidents):
the same figures as `GET /v1/fleet/report` and `conn report` totals. A rate with no
denominator yet (no closed incident, no judged packet...) is NaN ("no data"), never 0.
Every packager instance reads the same PostgreSQL ledger, so all report the same
values: aggregate with max(), not sum()."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client import Gauge

from conn_core import fleet

COUNTS = (
    "incidents",
    "closed",
    "safe_completions",
    "requests",
    "caught",
    "consequential_steps",
    "traces",
    "traces_complete",
    "false_actions",
    "incidents_with_false_action",
    "packets_accepted",
    "packets_judged",
    "packets_reliable",
    "escalated",
    "unauthorized_side_effects",
    "duplicate_side_effects",
    "ignored_records",
)
RATES = (
    "safe_completion_rate",
    "caught_rate",
    "trace_completeness",
    "false_action_rate",
    "packet_reliability",
    "escalation_rate",
)
DURATIONS = ("time_to_first_action_seconds", "time_to_verified_recovery_seconds")

GAUGES: dict[str, Gauge] = {
    key: Gauge(f"conn_fleet_{key}", f"Fleet SLI {key} (README, Fleet SLIs), all incidents")
    for key in COUNTS + RATES
}
CAUGHT_BY_REASON = Gauge(
    "conn_fleet_caught_by_reason", "Directives refused before acting, by reason", ["reason"]
)
DURATION_GAUGES: dict[str, Gauge] = {
    key: Gauge(f"conn_fleet_{key}", f"Fleet SLI {key} over incidents", ["stat"])
    for key in DURATIONS
}
REFRESHED = Gauge("conn_fleet_refreshed_timestamp_seconds", "When the fleet gauges were computed")
DEFINITIONS = Gauge("conn_fleet_definitions_version", "Version of the fleet SLI definitions")


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def samples(totals: Mapping[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric name, labels) -> value: what the gauges show for a report's totals."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for key in COUNTS + RATES:
        out[(f"conn_fleet_{key}", ())] = _number(totals[key])
    for reason, n in totals["caught_by_reason"].items():
        out[("conn_fleet_caught_by_reason", (("reason", reason),))] = float(n)
    for key in DURATIONS:
        for stat in ("median", "mean", "count"):
            out[(f"conn_fleet_{key}", (("stat", stat),))] = _number(totals[key][stat])
    return out


def publish(report: Mapping[str, Any], *, now: float) -> None:
    """Set every gauge from `report` (a `conn_core.fleet.fleet_report` without window)."""
    totals = report["totals"]
    for key, gauge in GAUGES.items():
        gauge.set(_number(totals[key]))
    CAUGHT_BY_REASON.clear()
    for reason, n in totals["caught_by_reason"].items():
        CAUGHT_BY_REASON.labels(reason=reason).set(n)
    for key, gauge in DURATION_GAUGES.items():
        for stat in ("median", "mean", "count"):
            gauge.labels(stat=stat).set(_number(totals[key][stat]))
    DEFINITIONS.set(fleet.DEFINITIONS_VERSION)
    REFRESHED.set(now)
