"""Verdict rules: what a verification window's samples say about a step.

Pure: the verifier gathers samples and control-plane observations through the
ports, then asks `judge`. Thresholds, sample counts and freshness come from the
runbook's `VerificationCriteria`, never from code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from conn_schemas.events import ControlPlaneCheck, RegionReadings
from conn_schemas.observations import MetricsReading
from conn_schemas.values import Verdict, VerificationCriteria


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    detail: str
    regions: tuple[RegionReadings, ...]


def reading_healthy(reading: MetricsReading, criteria: VerificationCriteria) -> bool:
    if reading.error_rate > criteria.max_error_rate:
        return False
    if reading.queue_depth > criteria.max_queue_depth:
        return False
    for signal, limit in criteria.extra_max.items():
        value = reading.extra.get(signal)
        if value is None or value > limit:
            return False
    return True


def judge(
    criteria: VerificationCriteria,
    samples: Mapping[str, Sequence[MetricsReading]],
    control_plane: Sequence[ControlPlaneCheck],
    *,
    step_time: datetime,
    now: datetime,
) -> Judgement:
    """Judge the window. Order matters: a stale picture cannot be trusted at all,
    then a control plane that is not as directed is a conflict, then health.

    - stale_metrics: a region has no sample observed after `step_time`, too few
      distinct fresh samples, or its newest sample is older than the allowed age.
    - conflict: some control-plane check does not match.
    - recovered / not_recovered / mixed: every sample of every region is healthy /
      no region is / regions disagree.
    """
    regions: list[RegionReadings] = []
    stale: list[str] = []
    healthy: list[str] = []
    for region in sorted(samples):
        readings = tuple(samples[region])
        ages = tuple(r.age_seconds(now) for r in readings)
        fresh_times = {r.observed_at for r in readings if r.observed_at > step_time}
        newest_age = min(ages) if ages else float("inf")
        fresh = (
            len(fresh_times) >= min(criteria.samples, 2)
            and newest_age <= criteria.max_reading_age_seconds
        )
        ok = bool(readings) and all(reading_healthy(r, criteria) for r in readings)
        regions.append(
            RegionReadings(
                region=region, readings=readings, ages_seconds=ages, healthy=ok, fresh=fresh
            )
        )
        if not fresh:
            stale.append(region)
        elif ok:
            healthy.append(region)

    if not samples:
        return Judgement(Verdict.STALE_METRICS, "no region could be sampled", ())
    if stale:
        return Judgement(
            Verdict.STALE_METRICS,
            f"no fresh samples since the step in {', '.join(stale)}",
            tuple(regions),
        )
    conflicts = [c for c in control_plane if not c.matches]
    if conflicts:
        detail = "; ".join(
            f"{c.subject}: expected {c.expected}, observed {c.observed}" for c in conflicts
        )
        return Judgement(Verdict.CONFLICT, detail, tuple(regions))
    unhealthy = [r.region for r in regions if not r.healthy]
    if not unhealthy:
        return Judgement(Verdict.RECOVERED, f"all of {', '.join(healthy)} healthy", tuple(regions))
    if not healthy:
        return Judgement(
            Verdict.NOT_RECOVERED, f"not recovered: {', '.join(unhealthy)}", tuple(regions)
        )
    return Judgement(
        Verdict.MIXED,
        f"recovered: {', '.join(healthy)}; not recovered: {', '.join(unhealthy)}",
        tuple(regions),
    )
