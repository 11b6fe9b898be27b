"""What the ledger last said of each region: one pure function, shown by the bridge
(`bridge.region_health`: health per region on the API, the console and the takeover
packet) and by the decision packet an approver signs (`approvals.decision_packet`'s
evidence). No I/O; the same state gives the same answer."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from conn_core.state import IncidentState
from conn_schemas.packet import RegionHealth


def latest_by_region(
    state: IncidentState, regions: Iterable[str], as_of: datetime | None = None
) -> tuple[RegionHealth, ...]:
    """For each of `regions`, in that order: its latest reading (None where it never had
    one) and its part of the latest verification snapshot (None where none judged it).
    The age of a reading is taken at `as_of` (None: no age)."""
    out = []
    for region in regions:
        reading = state.last_readings.get(region)
        checked = state.last_verification.get(region)
        out.append(
            RegionHealth(
                region=region,
                error_rate=reading.error_rate if reading else None,
                queue_depth=reading.queue_depth if reading else None,
                request_rate=reading.request_rate if reading else None,
                observed_at=reading.observed_at if reading else None,
                age_seconds=round(reading.age_seconds(as_of), 3)
                if reading and as_of is not None
                else None,
                healthy=checked.healthy if checked else None,
                fresh=checked.fresh if checked else None,
                verified_at=state.last_verification_at.get(region),
            )
        )
    return tuple(out)
