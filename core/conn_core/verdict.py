"""Verdict rules: what a verification window's samples say about a step.

Pure: the verifier gathers samples and control-plane observations through the
ports, then asks `judge`. Thresholds, sample counts and freshness come from the
runbook's `VerificationCriteria`, never from code.
"""

from __future__ import annotations

import math
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


VALUES = ("error_rate", "queue_depth", "request_rate")


def missing_values(reading: MetricsReading) -> list[str]:
    """Values the source could not give (no series, NaN or infinite): no data."""
    out = []
    for name in VALUES:
        value = getattr(reading, name)
        if value is None or not math.isfinite(value):
            out.append(name)
    return out


def reading_problem(reading: MetricsReading) -> str | None:
    """Why this reading says nothing about health, if it does not. No data is never
    health: a missing value, or a region with no traffic (its error rate is 0/0)."""
    missing = missing_values(reading)
    if missing:
        return f"no data for {', '.join(missing)} (missing, NaN or infinite at the source)"
    if reading.request_rate == 0:
        return "no traffic (request_rate 0): health cannot be judged"
    return None


def reading_healthy(reading: MetricsReading, criteria: VerificationCriteria) -> bool:
    if reading_problem(reading) is not None:
        return False
    assert reading.error_rate is not None and reading.queue_depth is not None
    if not reading.error_rate <= criteria.max_error_rate:
        return False
    if not reading.queue_depth <= criteria.max_queue_depth:
        return False
    for signal, limit in criteria.extra_max.items():
        value = reading.extra.get(signal)
        if value is None or not value <= limit:
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
    """Judge the window. Order matters: a picture that cannot be trusted cannot be
    judged at all, then a control plane that is not as directed is a conflict, then
    health.

    - stale_metrics: a region has no sample observed after `step_time`, too few
      distinct fresh samples, its newest sample is older than the allowed age, or a
      sample has no data for a value (missing, NaN or infinite at the source).
    - conflict: some control-plane check does not match.
    - recovered / not_recovered / mixed: every sample of every region is healthy /
      no region is / regions disagree. A sample with no traffic is never healthy.
    """
    regions: list[RegionReadings] = []
    untrusted: list[str] = []
    healthy: list[str] = []
    unhealthy: list[str] = []
    for region in sorted(samples):
        readings = tuple(samples[region])
        ages = tuple(r.age_seconds(now) for r in readings)
        no_data = sorted({p for r in readings if missing_values(r) and (p := reading_problem(r))})
        usable = [(r, a) for r, a in zip(readings, ages, strict=True) if not missing_values(r)]
        fresh_times = {r.observed_at for r, _ in usable if r.observed_at > step_time}
        newest_age = min((a for _, a in usable), default=float("inf"))
        fresh = (
            not no_data
            and len(fresh_times) >= min(criteria.samples, 2)
            and newest_age <= criteria.max_reading_age_seconds
        )
        ok = bool(readings) and all(reading_healthy(r, criteria) for r in readings)
        regions.append(
            RegionReadings(
                region=region, readings=readings, ages_seconds=ages, healthy=ok, fresh=fresh
            )
        )
        if no_data:
            untrusted.append(f"{region} ({'; '.join(no_data)})")
        elif not fresh:
            untrusted.append(f"{region} (no fresh samples since the step)")
        elif ok:
            healthy.append(region)
        else:
            problems = sorted({p for r in readings if (p := reading_problem(r))})
            unhealthy.append(f"{region} ({'; '.join(problems)})" if problems else region)

    if not samples:
        return Judgement(Verdict.STALE_METRICS, "no region could be sampled", ())
    if untrusted:
        return Judgement(
            Verdict.STALE_METRICS,
            f"no usable metrics in {', '.join(untrusted)}",
            tuple(regions),
        )
    conflicts = [c for c in control_plane if not c.matches]
    if conflicts:
        detail = "; ".join(
            f"{c.subject}: expected {c.expected}, observed {c.observed}" for c in conflicts
        )
        return Judgement(Verdict.CONFLICT, detail, tuple(regions))
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
