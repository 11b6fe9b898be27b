"""The fleet SLIs (conn_core.fleet) as Prometheus gauges, `conn_fleet_*`.

Refreshed by a packager timer from the read model's ledger (all time, all incidents):
the same figures as `GET /v1/fleet/report` and `conn report` totals. A rate with no
denominator yet (no closed incident, no judged packet...) is NaN ("no data"), never 0.
Every packager instance reads the same PostgreSQL ledger, so all report the same
values: aggregate with max(), not sum().

`LedgerFeed` keeps the per-incident facts between refreshes and reads only the ledger
entries written since (each incident's entries after the last one it saw), so a refresh
costs what the ledger grew by, not the whole ledger. If an incident's entries do not
continue the chain it saw (the read model was rebuilt or replaced), it starts over from
the whole ledger."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import asyncpg
from prometheus_client import Gauge

from conn_core import fleet
from conn_core.chain import GENESIS
from conn_readmodel.store import check_schema
from conn_schemas.codec import decode_raw

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


class LedgerFeed:
    """The fleet report over the read model's ledger, kept up to date incrementally
    (module docstring). `report` equals `conn_readmodel.queries.fleet_report`."""

    def __init__(self, schema: str) -> None:
        self.schema = check_schema(schema)
        self.tally = fleet.FleetTally()
        self.seen: dict[str, tuple[int, str]] = {}
        """incident -> (sequence, hash) of its last ledger entry observed."""
        self.restarts = 0

    async def refresh(self, db: asyncpg.Pool | asyncpg.Connection) -> bool:
        """Observe the entries written since the last call; False if there were none."""
        heads = {
            r["incident_id"]: (int(r["sequence"]), str(r["head_hash"]))
            for r in await db.fetch(
                f"SELECT incident_id, sequence, head_hash FROM {self.schema}.incidents"
            )
        }
        if heads == self.seen:
            return False
        if any(heads.get(iid, (-1, ""))[0] < seq for iid, (seq, _) in self.seen.items()):
            self._restart()  # an incident vanished or shrank: not the ledger we saw
        grown = [iid for iid, head in heads.items() if self.seen.get(iid) != head]
        continued = await self._read(db, grown, check=True)
        if continued and any(
            self.seen.get(iid, (0, GENESIS)) != heads[iid]
            and self.seen.get(iid, (0, GENESIS))[0] <= heads[iid][0]
            for iid in grown
        ):
            # Short of the head read just before, or as long with another hash (the
            # ledger grown meanwhile shows as longer: fine): rewritten.
            continued = False
        if not continued:
            # Does not continue the chain seen: read the whole ledger again, as
            # `queries.fleet_events` does (no chain check there either).
            self._restart()
            await self._read(db, list(heads), check=False)
        return True

    async def _read(
        self, db: asyncpg.Pool | asyncpg.Connection, incidents: list[str], *, check: bool
    ) -> bool:
        """Observe the incidents' entries after the last one seen, in ledger order; False
        (having observed nothing) if `check` and they do not continue what was seen."""
        marks = [self.seen.get(iid, (0, GENESIS)) for iid in incidents]
        rows = await db.fetch(
            f"""SELECT l.incident_id, l.sequence, l.prev_hash, l.hash, l.raw
            FROM unnest($1::text[], $2::integer[]) AS m(incident_id, sequence)
            JOIN {self.schema}.ledger_entries l
              ON l.incident_id = m.incident_id AND l.sequence > m.sequence
            ORDER BY l.incident_id, l.sequence""",
            incidents,
            [seq for seq, _ in marks],
        )
        if check:
            seen = dict(self.seen)
            for row in rows:
                seq, head = seen.get(row["incident_id"], (0, GENESIS))
                if row["sequence"] != seq + 1 or row["prev_hash"] != head:
                    return False
                seen[row["incident_id"]] = (row["sequence"], row["hash"])
        for row in rows:
            self.tally.observe(decode_raw(row["raw"]))
            self.seen[row["incident_id"]] = (int(row["sequence"]), str(row["hash"]))
        return True

    def report(self) -> dict[str, Any]:
        return fleet.report_from(self.tally.slis().values())

    def _restart(self) -> None:
        self.tally = fleet.FleetTally()
        self.seen = {}
        self.restarts += 1
