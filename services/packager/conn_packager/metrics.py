"""Packager metrics (served on the ops server's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_PROJECTED = Counter(
    "conn_packager_events_projected_total", "Events projected into the read model", ["event_type"]
)
RECORDS_SKIPPED = Counter(
    "conn_packager_records_skipped_total",
    "Records not projected (already applied, unreadable, or untrusted)",
    ["reason"],
)
OFFSET_GAPS = Counter(
    "conn_packager_offset_gaps_total",
    "Records whose offset was beyond the projection's next offset",
)
PACKETS_PUBLISHED = Counter(
    "conn_packager_packets_published_total", "Takeover packets published", ["trigger", "path"]
)
PROJECTION_LAG = Gauge(
    "conn_packager_projection_lag_records",
    "Records in conn.events not yet projected",
    ["partition"],
)
