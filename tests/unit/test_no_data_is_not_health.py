"""Invariant 6, "no data is never health", for `conn_core.verdict.judge`.

The oracle is DESIGN.md's sentence, not a copy of `judge`: a region verifies as
recovered only if every reading in its window has all its values, real traffic
(request_rate > 0), an error rate and queue depth within the runbook's limits,
enough distinct fresh samples after the step, and a newest sample young enough;
a missing / NaN / infinite value, zero traffic or a stale picture in any region
in scope means the verdict is not `recovered`. Adapters record a value the source
could not give (missing series, NaN, ±inf) as None (the contract refuses NaN and
infinity: JSON has neither), so the generator draws None for those.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conn_core.verdict import judge
from conn_schemas.events import ControlPlaneCheck
from conn_schemas.observations import MetricsReading
from conn_schemas.values import Verdict, VerificationCriteria

STEP = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
NOW = STEP + timedelta(seconds=10)
CRIT = VerificationCriteria(samples=3, max_error_rate=0.02, max_queue_depth=100)
OK = ControlPlaneCheck(subject="s", expected="x", observed="x", matches=True)
BAD = ControlPlaneCheck(subject="s", expected="x", observed="y", matches=False)

NAN = float("nan")
INF = float("inf")


def reading(
    region: str,
    at: float,
    *,
    err: float | None = 0.001,
    queue: float | None = 5.0,
    rate: float | None = 80.0,
) -> MetricsReading:
    return MetricsReading(
        region=region,
        error_rate=err,
        queue_depth=queue,
        request_rate=rate,
        observed_at=STEP + timedelta(seconds=at),
    )


def window(region: str, **values: float | None) -> list[MetricsReading]:
    return [reading(region, at, **values) for at in (7, 8, 9)]  # type: ignore[arg-type]


def test_a_healthy_window_recovers() -> None:
    j = judge(CRIT, {"us-east": window("us-east")}, [OK], step_time=STEP, now=NOW)
    assert j.verdict is Verdict.RECOVERED


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"err": None}, "no data for error_rate"),
        ({"queue": None}, "no data for queue_depth"),
        ({"rate": None}, "no data for request_rate"),
    ],
)
def test_a_missing_value_is_no_data(values: dict[str, None], reason: str) -> None:
    samples = {"us-east": window("us-east"), "eu-west": window("eu-west", **values)}
    j = judge(CRIT, samples, [OK], step_time=STEP, now=NOW)
    assert j.verdict is Verdict.STALE_METRICS
    assert "eu-west" in j.detail and reason in j.detail
    (eu,) = [r for r in j.regions if r.region == "eu-west"]
    assert not eu.fresh and not eu.healthy


def test_one_missing_sample_in_the_window_is_enough_to_refuse() -> None:
    samples = {"us-east": [reading("us-east", 7), reading("us-east", 8, err=None)]}
    samples["us-east"].append(reading("us-east", 9))
    assert judge(CRIT, samples, [OK], step_time=STEP, now=NOW).verdict is not Verdict.RECOVERED


def test_zero_traffic_is_not_health() -> None:
    quiet = window("eu-west", err=0.0, queue=0.0, rate=0.0)
    j = judge(CRIT, {"eu-west": quiet}, [OK], step_time=STEP, now=NOW)
    assert j.verdict is Verdict.NOT_RECOVERED
    assert "no traffic" in j.detail
    j = judge(CRIT, {"eu-west": quiet, "us-east": window("us-east")}, [OK], step_time=STEP, now=NOW)
    assert j.verdict is Verdict.MIXED and "eu-west (no traffic" in j.detail


def test_the_contract_refuses_nan_and_infinity() -> None:
    """JSON has no NaN/inf: a reading that held one could not be logged (it would
    be dead-lettered), so adapters must turn them into None before this point."""
    for bad in (NAN, INF, -INF):
        with pytest.raises(ValidationError):
            reading("us-east", 9, err=bad)
        with pytest.raises(ValidationError):
            MetricsReading(
                region="us-east",
                error_rate=0.0,
                queue_depth=0.0,
                request_rate=1.0,
                observed_at=STEP,
                extra={"x": bad},
            )


# --- the property --------------------------------------------------------------------------

REGIONS = ("us-east", "eu-west", "ap-south")
VALUE = st.sampled_from(["ok", "high", "missing", "nan", "inf"])
RATE = st.sampled_from(["ok", "zero", "missing", "nan", "inf"])
sample_st = st.tuples(st.integers(min_value=-25, max_value=9), VALUE, VALUE, RATE)
samples_st = st.dictionaries(
    st.sampled_from(REGIONS), st.lists(sample_st, min_size=0, max_size=4), max_size=3
)
criteria_st = st.builds(
    VerificationCriteria,
    samples=st.integers(min_value=1, max_value=4),
    max_reading_age_seconds=st.sampled_from([1.0, 5.0, 30.0]),
)

ERR = {"ok": 0.01, "high": 0.5, "missing": None, "nan": NAN, "inf": INF}
QUEUE = {"ok": 10.0, "high": 900.0, "missing": None, "nan": NAN, "inf": INF}
RATES = {"ok": 50.0, "zero": 0.0, "missing": None, "nan": NAN, "inf": INF}
NO_DATA = ("missing", "nan", "inf")


def raw_reading(region: str, at: float, err: str, queue: str, rate: str) -> MetricsReading:
    """NaN and infinity cannot pass the contract's validation (JSON has neither); a
    reading built in memory without validation must still never count as health."""
    values = {"error_rate": ERR[err], "queue_depth": QUEUE[queue], "request_rate": RATES[rate]}
    fields = {"region": region, "observed_at": STEP + timedelta(seconds=at), "extra": {}}
    if any((isinstance(v, float) and v != v) or v == INF for v in values.values()):
        return MetricsReading.model_construct(**fields, **values)
    return MetricsReading(**fields, **values)


Sample = tuple[int, str, str, str]


def design_says_recovered(
    crit: VerificationCriteria, raw: dict[str, list[Sample]], conflict: bool, now_s: float
) -> bool:
    """DESIGN.md invariant 6, read literally: recovered only with fresh, sustained,
    present and in-band readings with traffic in every region, and no conflict."""
    if not raw or conflict:
        return False
    for samples in raw.values():
        if not samples:
            return False
        for _, err, queue, rate in samples:
            if set(NO_DATA) & {err, queue, rate} or rate == "zero":
                return False  # no data (missing, NaN, infinite) / no traffic is never health
            if err == "high" or queue == "high":
                return False
        fresh = {at for at, *_ in samples if at > 0}
        if len(fresh) < min(crit.samples, 2):
            return False  # not sustained over the window since the step
        newest_age = min(max(0.0, now_s - at) for at, *_ in samples)
        if newest_age > crit.max_reading_age_seconds:
            return False  # stale
    return True


@settings(max_examples=600, deadline=None)
@given(
    crit=criteria_st,
    raw=samples_st,
    conflict=st.booleans(),
    now_after=st.sampled_from([0.0, 0.5, 3.0, 40.0]),
)
def test_recovered_only_when_design_says_so(
    crit: VerificationCriteria, raw: dict[str, list[Sample]], conflict: bool, now_after: float
) -> None:
    samples = {region: [raw_reading(region, at, *v) for at, *v in rs] for region, rs in raw.items()}
    now_s = 9 + now_after
    j = judge(
        crit,
        samples,
        [OK, BAD] if conflict else [OK],
        step_time=STEP,
        now=STEP + timedelta(seconds=now_s),
    )
    expected = design_says_recovered(crit, raw, conflict, now_s)
    assert (j.verdict is Verdict.RECOVERED) is expected, (j.verdict, j.detail)
    if not expected:
        assert j.detail  # a non-recovered verdict always says why
    for region, rs in raw.items():
        if any(set(NO_DATA) & {e, q, r} for _, e, q, r in rs):
            # no data: the picture cannot be trusted, whatever the other regions say
            assert j.verdict is Verdict.STALE_METRICS, (region, j.detail)
            assert "no data" in j.detail


def test_nan_cannot_sneak_in_through_comparisons() -> None:
    """Belt and braces: even a reading built without validation (model_construct)
    carrying NaN is never healthy."""
    sneaky = MetricsReading.model_construct(
        region="us-east",
        error_rate=NAN,
        queue_depth=NAN,
        request_rate=NAN,
        observed_at=STEP + timedelta(seconds=8),
        extra={},
    )
    samples = {"us-east": [sneaky, sneaky, reading("us-east", 9)]}
    j = judge(CRIT, samples, [OK], step_time=STEP, now=NOW)
    assert j.verdict is Verdict.STALE_METRICS and "no data" in j.detail
