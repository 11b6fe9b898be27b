"""Run one verification: settle, sample every region across the window, read the
expected control-plane state (read-only port calls only), then ask the pure core.

Never guesses: a region whose metrics cannot be read gets no reading for that
round (so too few fresh readings -> `stale_metrics`), and a control-plane state
that cannot be read is reported as not matching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from conn_core.ports import FeatureFlags, Metrics, Orchestrator, PortError, RegionsMetrics
from conn_core.verdict import judge
from conn_schemas.events import ControlPlaneCheck, VerificationSnapshotPayload, utcnow
from conn_schemas.observations import MetricsReading
from conn_schemas.values import (
    MAX_MACHINE_TEXT,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    ScaleWorkerPool,
    clean_text,
)
from conn_verifier import metrics as m
from conn_verifier.plan import Expected, Job

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ReadPorts:
    """The ports the verifier reads. Only their read methods are ever called."""

    flags: FeatureFlags
    orchestrator: Orchestrator
    metrics: Metrics


def sample_offsets(window_seconds: float, samples: int) -> list[float]:
    """Seconds after the window start at which to sample (evenly, both ends included)."""
    if samples <= 1:
        return [window_seconds]
    return [window_seconds * i / (samples - 1) for i in range(samples)]


async def _sleep_until(when: datetime, clock: Clock, sleep: Sleep) -> None:
    delay = (when - clock()).total_seconds()
    if delay > 0:
        await sleep(delay)


def _describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return clean_text(text, 280)  # fits a one-line ControlPlaneCheck field with its prefix


async def _read(metrics: Metrics, region: str) -> MetricsReading | str:
    try:
        return await metrics.read_region(region)
    except PortError as exc:
        m.PORT_ERRORS.labels(port="metrics").inc()
        return _describe_error(exc)
    except Exception as exc:  # noqa: BLE001 - an adapter bug is "no reading", never a guess
        m.PORT_ERRORS.labels(port="metrics").inc()
        log.warning("metrics adapter raised", extra={"region": region, "error": repr(exc)})
        return _describe_error(exc)


async def read_round(metrics: Metrics, regions: Sequence[str]) -> list[MetricsReading | str]:
    """One sampling round: a reading, or why there is none, per region (in order). One
    call for every region when the port can (`RegionsMetrics`), else one per region,
    concurrently. Either way a region that cannot be read gets no reading."""
    if not isinstance(metrics, RegionsMetrics):
        return list(await asyncio.gather(*(_read(metrics, r) for r in regions)))
    try:
        got = await metrics.read_regions(regions)
    except Exception as exc:  # noqa: BLE001 - an adapter bug is "no reading", never a guess
        log.warning("metrics adapter raised", extra={"regions": list(regions), "error": repr(exc)})
        got = dict.fromkeys(regions, PortError(_describe_error(exc)))
    results: list[MetricsReading | str] = []
    for region in regions:
        result = got.get(region)
        if isinstance(result, MetricsReading) and result.region == region:
            results.append(result)
            continue
        m.PORT_ERRORS.labels(port="metrics").inc()
        if isinstance(result, BaseException):
            results.append(_describe_error(result))
        else:
            results.append(f"no reading for region {region!r}")
    return results


async def check_control_plane(expected: Expected, ports: ReadPorts) -> ControlPlaneCheck:
    """Read (never change) the state a step should have produced."""
    a = expected.action
    if isinstance(a, DisableFlagRule | EnableFlagRule):
        subject = f"flag {a.flag}/{a.rule} in {a.region}"
    elif isinstance(a, DrainWorkerPool | ScaleWorkerPool):
        subject = f"pool {a.pool} in {a.region}"
    else:
        subject = f"tier {a.tier} in {a.region}"
    try:
        if isinstance(a, DisableFlagRule):
            rule = await ports.flags.get_rule(a.flag, a.rule, a.region)
            observed = "enabled" if rule.enabled else "disabled"
            return ControlPlaneCheck(
                subject=subject, expected="disabled", observed=observed, matches=not rule.enabled
            )
        if isinstance(a, EnableFlagRule):
            rule = await ports.flags.get_rule(a.flag, a.rule, a.region)
            observed = "enabled" if rule.enabled else "disabled"
            return ControlPlaneCheck(
                subject=subject, expected="enabled", observed=observed, matches=rule.enabled
            )
        if isinstance(a, ScaleWorkerPool):
            pool = await ports.orchestrator.get_pool(a.pool, a.region)
            return ControlPlaneCheck(
                subject=subject,
                expected=f"scaled (desired {a.replicas}, ready {a.replicas})",
                observed=f"desired {pool.desired_replicas}, ready {pool.ready_replicas}",
                matches=pool.desired_replicas == a.replicas and pool.ready_replicas == a.replicas,
            )
        if isinstance(a, DrainWorkerPool):
            pool = await ports.orchestrator.get_pool(a.pool, a.region)
            return ControlPlaneCheck(
                subject=subject,
                expected="drained (desired 0, ready 0)",
                observed=f"desired {pool.desired_replicas}, ready {pool.ready_replicas}",
                matches=pool.drained,
            )
        tier = await ports.orchestrator.get_tier(a.tier, a.region)
        before = expected.generation_before
        # No data is not health: without the generation before the step, nothing
        # proves the restart happened (a restart that never ran must not verify).
        restarted = before is not None and tier.generation > before
        wanted = (
            f"restarted (generation > {before}), healthy, not restarting"
            if before is not None
            else "restarted, healthy, not restarting (generation before the step unknown: "
            "the restart cannot be proven)"
        )
        return ControlPlaneCheck(
            subject=subject,
            expected=wanted,
            observed=(
                f"generation {tier.generation}, healthy={str(tier.healthy).lower()}, "
                f"restarting={str(tier.restarting).lower()}"
            ),
            matches=restarted and tier.healthy and not tier.restarting,
        )
    except Exception as exc:  # noqa: BLE001 - unreadable state is reported, never assumed
        port = "flags" if isinstance(a, DisableFlagRule | EnableFlagRule) else "orchestrator"
        m.PORT_ERRORS.labels(port=port).inc()
        if not isinstance(exc, PortError):
            log.warning("control-plane adapter raised", extra={"error": repr(exc)})
        return ControlPlaneCheck(
            subject=subject,
            expected="readable state",
            observed=f"unreadable: {_describe_error(exc)}",
            matches=False,
        )


async def run_verification(
    job: Job,
    ports: ReadPorts,
    *,
    settle_override: float | None = None,
    clock: Clock = utcnow,
    sleep: Sleep = asyncio.sleep,
) -> VerificationSnapshotPayload:
    criteria = job.criteria
    if settle_override is not None:
        criteria = criteria.model_copy(update={"settle_seconds": settle_override})
    step_time = job.step_time or clock()
    await _sleep_until(step_time + timedelta(seconds=criteria.settle_seconds), clock, sleep)

    window_start = clock()
    samples: dict[str, list[MetricsReading]] = {region: [] for region in job.regions}
    errors: dict[str, str] = {}
    for offset in sample_offsets(criteria.window_seconds, criteria.samples):
        await _sleep_until(window_start + timedelta(seconds=offset), clock, sleep)
        results = await read_round(ports.metrics, job.regions)
        for region, result in zip(job.regions, results, strict=True):
            if isinstance(result, MetricsReading):
                samples[region].append(result)
            else:
                errors[region] = result
    checks = await asyncio.gather(*(check_control_plane(e, ports) for e in job.expected))
    window_end = clock()

    judgement = judge(criteria, samples, checks, step_time=step_time, now=window_end)
    detail = judgement.detail
    if errors:
        detail += "; metrics unreadable: " + "; ".join(f"{r}: {e}" for r, e in errors.items())
    detail += f" [{job.criteria_source}"
    detail += ", settle overridden]" if settle_override is not None else "]"
    return VerificationSnapshotPayload(
        trigger=job.trigger,
        step_correlation_id=job.step_correlation_id,
        regions=judgement.regions,
        control_plane=tuple(checks),
        criteria=criteria,
        verdict=judgement.verdict,
        detail=clean_text(detail, MAX_MACHINE_TEXT, multiline=True),
        window_started_at=window_start,
        window_ended_at=window_end,
    )
