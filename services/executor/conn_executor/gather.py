"""Reading live state through the adapters (never acting): what to read for a
step, for a directed gather, and the bounded, error-tolerant reads themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from conn_core.ports import FeatureFlags, Metrics, Orchestrator, PortError, RegionsMetrics
from conn_executor.redact import scrub
from conn_schemas.observations import (
    FlagRuleState,
    MetricsReading,
    Observation,
    TierState,
    WorkerPoolState,
)
from conn_schemas.values import (
    MAX_LINE,
    MAX_LIST,
    Action,
    ActionType,
    AuthorityBoundary,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    Expectation,
    FlagRuleExpectation,
    RestartDependencyTier,
    ScaleWorkerPool,
    TierExpectation,
    WorkerPoolExpectation,
    clean_text,
)

T = TypeVar("T")


@dataclass
class ReadPlan:
    """What to read: (flag, rule, region), (pool, region), (tier, region), regions."""

    flags: set[tuple[str, str, str]] = field(default_factory=set)
    pools: set[tuple[str, str]] = field(default_factory=set)
    tiers: set[tuple[str, str]] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)


def plan_for_step(action: Action, expectation: Expectation | None) -> ReadPlan:
    """Before a consequential step: its exact target, what the commander expects,
    and the health of the regions involved."""
    plan = ReadPlan()
    if isinstance(action, DisableFlagRule | EnableFlagRule):
        plan.flags.add((action.flag, action.rule, action.region))
        plan.regions.add(action.region)
    elif isinstance(action, DrainWorkerPool | ScaleWorkerPool):
        plan.pools.add((action.pool, action.region))
        plan.regions.add(action.region)
    elif isinstance(action, RestartDependencyTier):
        plan.tiers.add((action.tier, action.region))
        plan.regions.add(action.region)
    if isinstance(expectation, FlagRuleExpectation):
        plan.flags.add((expectation.flag, expectation.rule, expectation.region))
    elif isinstance(expectation, WorkerPoolExpectation):
        plan.pools.add((expectation.pool, expectation.region))
    elif isinstance(expectation, TierExpectation):
        plan.tiers.add((expectation.tier, expectation.region))
    return plan


def plan_for_regions(authority: AuthorityBoundary | None, regions: Iterable[str]) -> ReadPlan:
    """A directed gather: every target named by the authority boundary in the
    requested regions (all declared regions if none), plus their health."""
    plan = ReadPlan()
    wanted = tuple(regions) or (authority.regions if authority else ())
    plan.regions.update(wanted)
    if authority is None:
        return plan
    targets: dict[ActionType, set[str]] = {}
    for grant in authority.allowed:
        targets.setdefault(grant.action, set()).update(grant.targets)
    for reservation in authority.reservations:
        targets.setdefault(reservation.action, set()).add(reservation.target)
    for region in wanted:
        for target in targets.get(ActionType.DISABLE_FLAG_RULE, ()):
            flag, sep, rule = target.partition("/")
            if sep and flag and rule:
                plan.flags.add((flag, rule, region))
        for pool in targets.get(ActionType.DRAIN_WORKER_POOL, ()):
            plan.pools.add((pool, region))
        for tier in targets.get(ActionType.RESTART_DEPENDENCY_TIER, ()):
            plan.tiers.add((tier, region))
    return plan


def plan_for_outcome(action: Action) -> ReadPlan:
    """After a crash: what a step touched, to report what is observed now."""
    return plan_for_step(action, None)


async def _bounded(what: str, call: Awaitable[T], seconds: float) -> T | str:
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        return f"{what}: timed out after {seconds}s"
    except PortError as exc:
        return scrub(f"{what}: {exc}")


class Gatherer:
    def __init__(
        self, flags: FeatureFlags, orchestrator: Orchestrator, metrics: Metrics, timeout: float
    ) -> None:
        self.flags = flags
        self.orchestrator = orchestrator
        self.metrics = metrics
        self.timeout = timeout

    async def observe(self, plan: ReadPlan) -> Observation:
        """Read everything in the plan concurrently; failed reads become `errors`."""
        flag_keys = sorted(plan.flags)
        pool_keys = sorted(plan.pools)
        tier_keys = sorted(plan.tiers)
        region_keys = sorted(plan.regions)
        # The metrics of every region (last) run concurrently with the other reads.
        *targets, metrics = await asyncio.gather(
            *(
                _bounded(f"flag {f}/{r} in {g}", self.flags.get_rule(f, r, g), self.timeout)
                for f, r, g in flag_keys
            ),
            *(
                _bounded(f"pool {p} in {g}", self.orchestrator.get_pool(p, g), self.timeout)
                for p, g in pool_keys
            ),
            *(
                _bounded(f"tier {t} in {g}", self.orchestrator.get_tier(t, g), self.timeout)
                for t, g in tier_keys
            ),
            self._read_regions(region_keys),
        )
        results = [*targets, *metrics]
        flags: list[FlagRuleState] = []
        pools: list[WorkerPoolState] = []
        tiers: list[TierState] = []
        readings: list[MetricsReading] = []
        errors: list[str] = []
        for result in results:
            if isinstance(result, str):
                errors.append(result)
            elif isinstance(result, FlagRuleState):
                flags.append(result)
            elif isinstance(result, WorkerPoolState):
                pools.append(result)
            elif isinstance(result, TierState):
                tiers.append(result)
            elif isinstance(result, MetricsReading):
                readings.append(result)
        return Observation(
            flags=tuple(flags),
            pools=tuple(pools),
            tiers=tuple(tiers),
            metrics=tuple(readings),
            errors=tuple(clean_text(e, MAX_LINE) for e in errors[:MAX_LIST]),
        )

    async def _read_regions(self, regions: Sequence[str]) -> list[MetricsReading | str]:
        """The metrics of `regions` (a reading, or why there is none, per region in order).
        One call for all of them when the port can (`RegionsMetrics`: one scrape of the
        page), else one bounded call per region; either way each region gets what its own
        `read_region` would give: its reading, or its error under the same words."""
        if not regions:
            return []
        if not isinstance(self.metrics, RegionsMetrics):
            return list(
                await asyncio.gather(
                    *(
                        _bounded(f"metrics in {g}", self.metrics.read_region(g), self.timeout)
                        for g in regions
                    )
                )
            )
        try:
            async with asyncio.timeout(self.timeout):
                got = await self.metrics.read_regions(regions)
        except TimeoutError:
            return [f"metrics in {g}: timed out after {self.timeout}s" for g in regions]
        except PortError as exc:
            return [scrub(f"metrics in {g}: {exc}") for g in regions]
        out: list[MetricsReading | str] = []
        for region in regions:
            result = got.get(region)
            if isinstance(result, MetricsReading) and result.region == region:
                out.append(result)
            elif isinstance(result, PortError):
                out.append(scrub(f"metrics in {region}: {result}"))
            else:
                out.append(f"metrics in {region}: no reading for region {region!r}")
        return out
