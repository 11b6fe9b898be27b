"""Pure parts of the verifier: what is due (from the fold) and one verification run
against in-memory ports with a fake clock (no I/O, no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from unit.builders import EXECUTOR, History

from conn_core.fold import fold
from conn_core.ports import PortError
from conn_schemas import events as ev
from conn_schemas.observations import (
    ActionResult,
    FlagRuleState,
    MetricsReading,
    Observation,
    TierState,
    WorkerPoolState,
)
from conn_schemas.values import (
    DisableFlagRule,
    RestartDependencyTier,
    Verdict,
    VerificationCriteria,
    Verify,
)
from conn_verifier.plan import Expected, Job, pending
from conn_verifier.verify import ReadPorts, run_verification, sample_offsets

DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")


def succeeded(
    action: Any = DISABLE, cid: str = "s1", before: dict[str, Any] | None = None
) -> History:
    h = History().open().declare()
    h.direct(action, cid=cid)
    h.accept(cid, action)
    h.start(cid, action)
    h._add(
        ev.StepSucceeded,
        ev.StepSucceededPayload(
            action=action,
            result=ActionResult(idempotency_key=cid, changed=True, before=before or {}, after={}),
            summary="done",
            duration_ms=3,
        ),
        EXECUTOR,
        cid,
    )
    return h


# --- plan ---------------------------------------------------------------------------------


def test_an_all_regions_step_is_judged_in_every_declared_region() -> None:
    restart = RestartDependencyTier(tier="pricing-cache", region="us-east")
    h = succeeded(restart)
    (job,) = pending(fold(h.events, h.incident_id))
    assert job.criteria.scope == "all_regions"
    assert set(job.regions) == {"us-east", "eu-west"}, "every declared region, to see mixed"


def test_an_explicit_verify_uses_the_step_criteria_and_regions() -> None:
    h = succeeded()
    verify = Verify()
    h.direct(verify, cid="v1")
    h.accept("v1", verify, consequential=False)
    jobs = pending(fold(h.events, h.incident_id))
    (job,) = [j for j in jobs if j.correlation_id == "v1"]
    assert job.step_correlation_id == "s1"
    assert job.criteria.max_error_rate == 0.10 and job.regions == ("eu-west",)


def test_a_finished_step_is_due_once_in_the_regions_its_criteria_scope() -> None:
    h = succeeded()
    state = fold(h.events, h.incident_id)
    (job,) = pending(state)
    assert job.trigger == "step" and job.correlation_id == job.step_correlation_id == "s1"
    # The runbook judges disable_flag_rule in the step's region only (scope: step_regions).
    assert job.criteria.scope == "step_regions"
    assert job.regions == ("eu-west",)
    assert job.criteria == state.authority.criteria_for(DISABLE.action)  # type: ignore[union-attr]
    assert job.expected == (Expected(action=DISABLE),)
    assert job.step_time == state.directives["s1"].finished_at
    h.snapshot("s1", Verdict.RECOVERED)
    assert pending(fold(h.events, h.incident_id)) == [], "never verified twice"


def test_outcome_unknown_is_due_and_started_is_not() -> None:
    h = History().open().declare()
    h.direct(DISABLE, cid="s1")
    h.accept("s1", DISABLE)
    h.start("s1", DISABLE)
    assert pending(fold(h.events, h.incident_id)) == []
    h.unknown("s1", DISABLE)
    (job,) = pending(fold(h.events, h.incident_id))
    assert job.correlation_id == "s1"


def test_restart_carries_generation_before() -> None:
    h = succeeded(RESTART, before={"generation": 4, "healthy": False})
    (job,) = pending(fold(h.events, h.incident_id))
    assert job.expected == (Expected(action=RESTART, generation_before=4),)
    assert job.criteria.settle_seconds == 4, "restart criteria from the runbook file"


def test_verify_directive_targets_the_last_step() -> None:
    h = succeeded()
    h.snapshot("s1", Verdict.MIXED)
    h.resume()
    verify = Verify()
    h.direct(verify, cid="v1")
    h.accept("v1", verify, consequential=False)
    (job,) = pending(fold(h.events, h.incident_id))
    assert job.trigger == "directive" and job.correlation_id == "v1"
    assert job.step_correlation_id == "s1"
    assert job.expected == (Expected(action=DISABLE),)
    assert job.step_time is None


def test_closed_incident_has_nothing_due() -> None:
    h = succeeded()
    h.close()
    assert pending(fold(h.events, h.incident_id)) == []


# --- one run against in-memory ports ------------------------------------------------------


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakePlatform:
    """Read methods answer from fields; any mutating call fails the test."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.error = {"us-east": 0.005, "eu-west": 0.005}
        self.frozen_at: datetime | None = None
        self.unreachable: set[str] = set()
        self.rule_enabled = False
        self.generation = 5
        self.reads = 0

    async def read_region(self, region: str) -> MetricsReading:
        self.reads += 1
        if region in self.unreachable:
            raise PortError("connection refused", retriable=True)
        return MetricsReading(
            region=region,
            error_rate=self.error[region],
            queue_depth=5,
            request_rate=100,
            observed_at=self.frozen_at or self.clock.now,
        )

    async def get_rule(self, flag: str, rule: str, region: str) -> FlagRuleState:
        return FlagRuleState(
            flag=flag,
            rule=rule,
            region=region,
            enabled=self.rule_enabled,
            observed_at=self.clock.now,
        )

    async def get_pool(self, pool: str, region: str) -> WorkerPoolState:
        return WorkerPoolState(
            pool=pool,
            region=region,
            desired_replicas=0,
            ready_replicas=0,
            observed_at=self.clock.now,
        )

    async def get_tier(self, tier: str, region: str) -> TierState:
        return TierState(
            tier=tier,
            region=region,
            healthy=True,
            generation=self.generation,
            observed_at=self.clock.now,
        )

    async def disable_rule(self, *a: Any, **k: Any) -> ActionResult:
        raise AssertionError("verification must never change a target")

    drain_pool = restart_tier = disable_rule


T = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CRIT = VerificationCriteria(settle_seconds=2, window_seconds=4, samples=3)


def job(expected: tuple[Expected, ...] = (Expected(action=DISABLE),)) -> Job:
    return Job(
        incident_id="inc-1",
        trigger="step",
        correlation_id="s1",
        step_correlation_id="s1",
        regions=("us-east", "eu-west"),
        criteria=CRIT,
        expected=expected,
        step_time=T,
        criteria_source="test",
    )


async def run(
    platform: FakePlatform, clock: FakeClock, j: Job | None = None, **kw: Any
) -> ev.VerificationSnapshotPayload:
    ports = ReadPorts(flags=platform, orchestrator=platform, metrics=platform)  # type: ignore[arg-type]
    return await run_verification(j or job(), ports, clock=clock, sleep=clock.sleep, **kw)


def test_sample_offsets_span_the_window() -> None:
    assert sample_offsets(4, 3) == [0, 2, 4]
    assert sample_offsets(4, 1) == [4]


async def test_settles_then_samples_every_region_across_the_window() -> None:
    clock = FakeClock(T)
    platform = FakePlatform(clock)
    p = await run(platform, clock)
    assert p.verdict is Verdict.RECOVERED
    assert p.window_started_at == T + timedelta(seconds=2), "waited the settle window"
    assert p.window_ended_at == T + timedelta(seconds=6)
    assert platform.reads == 6, "3 samples x 2 regions"
    assert [len(r.readings) for r in p.regions] == [3, 3]
    assert p.control_plane[0].matches and p.criteria == CRIT


async def test_settle_override_is_recorded() -> None:
    clock = FakeClock(T)
    p = await run(FakePlatform(clock), clock, settle_override=0.0)
    assert p.window_started_at == T and p.criteria.settle_seconds == 0
    assert "settle overridden" in p.detail


async def test_unreachable_metrics_are_stale_never_guessed() -> None:
    clock = FakeClock(T)
    platform = FakePlatform(clock)
    platform.unreachable = {"eu-west"}
    platform.rule_enabled = True  # would be a conflict, but the picture is not trusted
    p = await run(platform, clock)
    assert p.verdict is Verdict.STALE_METRICS
    assert "connection refused" in p.detail
    eu = next(r for r in p.regions if r.region == "eu-west")
    assert eu.readings == () and not eu.fresh


class BatchPlatform(FakePlatform):
    """A metrics port that reads every region in one call (like ScrapeMetrics)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.batches = 0
        self.mislabel: str | None = None

    async def read_regions(self, regions: Any) -> dict[str, MetricsReading | PortError]:
        self.batches += 1
        out: dict[str, MetricsReading | PortError] = {}
        for region in regions:
            try:
                out[region] = await self.read_region(region)
            except PortError as exc:
                out[region] = exc
        if self.mislabel is not None:  # an adapter bug: another region's reading
            out[self.mislabel] = out[next(r for r in regions if r != self.mislabel)]
        return out


async def test_a_batched_metrics_port_is_read_once_per_round_and_judged_per_region() -> None:
    clock = FakeClock(T)
    platform = BatchPlatform(clock)
    platform.unreachable = {"eu-west"}
    p = await run(platform, clock)
    assert platform.batches == CRIT.samples, "one call per sampling round, every region"
    assert p.verdict is Verdict.STALE_METRICS and "connection refused" in p.detail
    by_region = {r.region: r for r in p.regions}
    assert len(by_region["us-east"].readings) == CRIT.samples
    assert by_region["eu-west"].readings == () and not by_region["eu-west"].fresh


async def test_a_reading_of_another_region_is_no_reading() -> None:
    clock = FakeClock(T)
    platform = BatchPlatform(clock)
    platform.mislabel = "eu-west"  # eu-west answered with us-east's reading
    p = await run(platform, clock)
    assert p.verdict is Verdict.STALE_METRICS, p.detail
    assert next(r for r in p.regions if r.region == "eu-west").readings == ()
    assert "no reading for region 'eu-west'" in p.detail


async def test_frozen_metrics_are_stale() -> None:
    clock = FakeClock(T)
    platform = FakePlatform(clock)
    platform.frozen_at = T - timedelta(seconds=1)
    assert (await run(platform, clock)).verdict is Verdict.STALE_METRICS


async def test_flag_still_enabled_is_a_conflict() -> None:
    clock = FakeClock(T)
    platform = FakePlatform(clock)
    platform.rule_enabled = True
    p = await run(platform, clock)
    assert p.verdict is Verdict.CONFLICT
    assert p.control_plane[0].observed == "enabled"


@pytest.mark.parametrize(("generation", "matches"), [(5, True), (4, False)])
async def test_tier_generation_must_increase(generation: int, matches: bool) -> None:
    clock = FakeClock(T)
    platform = FakePlatform(clock)
    platform.generation = generation
    p = await run(platform, clock, job((Expected(action=RESTART, generation_before=4),)))
    assert p.control_plane[0].matches is matches
    assert p.verdict is (Verdict.RECOVERED if matches else Verdict.CONFLICT)


async def test_one_region_unhealthy_is_mixed() -> None:
    clock = FakeClock(T)
    platform = FakePlatform(clock)
    platform.error["us-east"] = 0.2
    assert (await run(platform, clock)).verdict is Verdict.MIXED


# --- unknown outcomes are verified against the pre-step state (invariant 2) -------------------


def unknown_restart(pre_generation: int | None) -> History:
    h = History().open().declare()
    h.direct(RESTART, cid="s1")
    tiers = (
        ()
        if pre_generation is None
        else (
            TierState(
                tier="pricing-cache",
                region="us-east",
                healthy=False,
                generation=pre_generation,
                observed_at=T,
            ),
        )
    )
    h.gather("s1", observation=Observation(tiers=tiers))  # pre-step StateGathered
    h.accept("s1", RESTART)
    h.start("s1", RESTART)
    h.unknown("s1", RESTART)  # timed out: no result, no "before"
    return h


def test_an_unknown_restart_carries_the_generation_gathered_before_it() -> None:
    h = unknown_restart(4)
    (job,) = pending(fold(h.events, h.incident_id))
    assert job.expected == (Expected(action=RESTART, generation_before=4),)


@pytest.mark.parametrize(
    ("pre_generation", "now_generation", "verdict"),
    [
        (4, 5, Verdict.RECOVERED),  # it landed: a newer generation, healthy
        (4, 4, Verdict.CONFLICT),  # the restart never happened: must not verify as done
        (None, 9, Verdict.CONFLICT),  # nothing to compare with: cannot be proven
    ],
)
async def test_an_unknown_restart_verifies_only_if_it_really_happened(
    pre_generation: int | None, now_generation: int, verdict: Verdict
) -> None:
    h = unknown_restart(pre_generation)
    (planned,) = pending(fold(h.events, h.incident_id))
    clock = FakeClock(T)
    platform = FakePlatform(clock)
    platform.generation = now_generation
    p = await run(platform, clock, job(planned.expected))
    assert p.verdict is verdict, p.detail
