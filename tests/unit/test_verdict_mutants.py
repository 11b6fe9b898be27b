"""The verdict at its edges (written against mutants of verdict.py that survived).

Oracles from DESIGN.md invariant 6 and the runbook's criteria, not from the code:

- the criteria are *maxima*: a reading exactly at `max_error_rate`, `max_queue_depth`,
  an extra signal's limit or `max_reading_age_seconds` is within them; just above is not;
- a step is judged on what was observed *after* it: a sample taken at the very moment
  of the step cannot show its effect;
- "sustained over a window": two distinct fresh observations are enough when the
  runbook asks for more samples than that, one is never enough (unless it asks for one);
- the judgement keeps every region's readings and a detail that names the regions, for
  every verdict (the packet shows health per region with the age of each reading).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conn_core.verdict import judge, reading_healthy
from conn_schemas.events import ControlPlaneCheck
from conn_schemas.observations import MetricsReading
from conn_schemas.values import Verdict, VerificationCriteria

STEP = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
NOW = STEP + timedelta(seconds=10)
CRIT = VerificationCriteria(
    samples=3,
    max_error_rate=0.02,
    max_queue_depth=100,
    max_reading_age_seconds=15,
    extra_max={"p99_latency_ms": 800},
)
BAD = ControlPlaneCheck(
    subject="flag f/r in eu-west", expected="disabled", observed="enabled", matches=False
)


def reading(
    region: str = "us-east",
    at: float = 5.0,
    *,
    err: float = 0.0,
    queue: float = 0.0,
    latency: float = 100.0,
) -> MetricsReading:
    return MetricsReading(
        region=region,
        error_rate=err,
        queue_depth=queue,
        request_rate=50,
        observed_at=STEP + timedelta(seconds=at),
        extra={"p99_latency_ms": latency},
    )


def window(region: str = "us-east", **values: float) -> list[MetricsReading]:
    return [reading(region, at, **values) for at in (6.0, 7.0, 8.0)]


def verdict_of(samples: dict[str, list[MetricsReading]], criteria=CRIT) -> Verdict:  # type: ignore[no-untyped-def]
    return judge(criteria, samples, (), step_time=STEP, now=NOW).verdict


@pytest.mark.parametrize(
    ("at_limit", "over_limit"),
    [
        ({"err": 0.02}, {"err": 0.0201}),
        ({"queue": 100.0}, {"queue": 100.5}),
        ({"latency": 800.0}, {"latency": 800.1}),
    ],
    ids=["error_rate", "queue_depth", "extra signal"],
)
def test_a_reading_at_a_maximum_is_healthy_and_just_above_is_not(
    at_limit: dict[str, float], over_limit: dict[str, float]
) -> None:
    assert reading_healthy(reading(**at_limit), CRIT)
    assert not reading_healthy(reading(**over_limit), CRIT)
    assert verdict_of({"us-east": window(**at_limit)}) is Verdict.RECOVERED
    assert verdict_of({"us-east": window(**over_limit)}) is Verdict.NOT_RECOVERED


def test_a_newest_reading_exactly_the_maximum_age_old_is_fresh() -> None:
    # The newest sample is exactly max_reading_age_seconds old at NOW.
    now = STEP + timedelta(seconds=20)
    edge = now - timedelta(seconds=15)
    older = edge - timedelta(seconds=1)
    samples = [
        MetricsReading(region="us-east", error_rate=0, queue_depth=0, request_rate=5, observed_at=t)
        for t in (older, edge)
    ]
    criteria = CRIT.model_copy(update={"max_reading_age_seconds": 15, "extra_max": {}})
    assert edge > STEP and older > STEP
    assert judge(criteria, {"us-east": samples}, (), step_time=STEP, now=now).verdict is (
        Verdict.RECOVERED
    )
    later = now + timedelta(seconds=0.5)
    assert judge(criteria, {"us-east": samples}, (), step_time=STEP, now=later).verdict is (
        Verdict.STALE_METRICS
    )


def test_a_sample_taken_at_the_moment_of_the_step_does_not_show_its_effect() -> None:
    # One sample at the step time, one after it: only one fresh observation.
    samples = [reading(at=0.0), reading(at=5.0)]
    assert verdict_of({"us-east": samples}) is Verdict.STALE_METRICS
    # Both after the step: sustained.
    assert verdict_of({"us-east": [reading(at=0.001), reading(at=5.0)]}) is Verdict.RECOVERED


def test_two_distinct_fresh_observations_sustain_a_window_of_three_samples() -> None:
    assert verdict_of({"us-east": [reading(at=4.0), reading(at=6.0)]}) is Verdict.RECOVERED
    # The same observation twice is one observation (a frozen source).
    assert verdict_of({"us-east": [reading(at=6.0), reading(at=6.0)]}) is Verdict.STALE_METRICS


def test_a_runbook_asking_for_one_sample_is_satisfied_by_one() -> None:
    one = CRIT.model_copy(update={"samples": 1})
    assert verdict_of({"us-east": [reading(at=6.0)]}, one) is Verdict.RECOVERED


@pytest.mark.parametrize(
    ("samples", "control", "verdict"),
    [
        ({"us-east": window(), "eu-west": window("eu-west")}, (), Verdict.RECOVERED),
        (
            {"us-east": window(err=0.5), "eu-west": window("eu-west", err=0.5)},
            (),
            Verdict.NOT_RECOVERED,
        ),
        ({"us-east": window(), "eu-west": window("eu-west", err=0.5)}, (), Verdict.MIXED),
        ({"us-east": window(), "eu-west": window("eu-west")}, (BAD,), Verdict.CONFLICT),
        ({"us-east": window(), "eu-west": [reading("eu-west", -20)]}, (), Verdict.STALE_METRICS),
    ],
    ids=lambda v: v.value if isinstance(v, Verdict) else "",
)
def test_every_verdict_keeps_each_regions_readings_and_names_the_regions(
    samples: dict[str, list[MetricsReading]],
    control: tuple[ControlPlaneCheck, ...],
    verdict: Verdict,
) -> None:
    judgement = judge(CRIT, samples, control, step_time=STEP, now=NOW)
    assert judgement.verdict is verdict
    assert isinstance(judgement.detail, str) and judgement.detail
    assert {r.region for r in judgement.regions} == set(samples)
    for region in judgement.regions:
        assert list(region.readings) == samples[region.region]
        assert len(region.ages_seconds) == len(region.readings)
    if verdict is Verdict.CONFLICT:
        assert "eu-west" in judgement.detail and "expected disabled" in judgement.detail
    else:
        mentioned = [r for r in samples if r in judgement.detail]
        assert mentioned, judgement.detail
        if verdict is Verdict.MIXED:
            assert "us-east" in judgement.detail.split(";")[0]
            assert "eu-west" in judgement.detail.split(";")[1]
