"""Pure model tests: determinism, the seed outage, the demo path, each scenario."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conn_simulator import scenarios
from conn_simulator.model import HEALTHY_ERROR_RATIO, Platform

FLAG, RULE = "checkout-pricing", "canary-10pct"
Step = Callable[[Platform], object]


def platform(name: str, seed: int = 7) -> Platform:
    return Platform.from_scenario(scenarios.load(name), seed)


def disable_canary(region: str) -> Step:
    return lambda p: p.set_rule(FLAG, RULE, region, False)


def drain(region: str) -> Step:
    return lambda p: p.scale_pool("cache-invalidation", region, 0)


def restart(region: str) -> Step:
    return lambda p: p.restart_tier("pricing-cache", region)


DEMO: list[Step] = [disable_canary("eu-west"), drain("us-east"), restart("us-east")]


def run(p: Platform, steps: list[Step], gap: float = 120.0, settle: float = 600.0) -> Platform:
    for act in steps:
        act(p)
        p.step(gap)
    p.step(settle)
    return p


def test_scenarios_all_load() -> None:
    assert {
        "seed_outage",
        "full_recovery",
        "partial_mixed",
        "flag_conflict",
        "frozen_metrics",
        "no_improvement",
    } <= set(scenarios.available())
    for name in scenarios.available():
        assert platform(name).scenario.name == name


def test_same_scenario_and_seed_is_deterministic() -> None:
    a, b = run(platform("seed_outage"), DEMO), run(platform("seed_outage"), DEMO)
    assert a.snapshot() == b.snapshot()
    c = run(platform("seed_outage", seed=8), DEMO)
    assert c.metrics["us-east"].error_ratio != a.metrics["us-east"].error_ratio


def test_step_slicing_does_not_change_the_outcome() -> None:
    a, b = platform("seed_outage"), platform("seed_outage")
    a.step(300)
    for _ in range(1200):
        b.step(0.25)
    assert a.snapshot() == b.snapshot()


def test_seed_outage_fails_in_both_regions_and_stays_failing() -> None:
    p = platform("seed_outage")
    p.step(900)
    for region in ("us-east", "eu-west"):
        assert p.metrics[region].error_ratio > 0.1
        assert p.metrics[region].queue_depth > 300
        assert not p.recovered(region)


def test_demo_path_leads_to_mixed_regions() -> None:
    p = run(platform("seed_outage"), DEMO)
    assert p.recovered("us-east")
    assert not p.recovered("eu-west")
    assert p.active_faults("eu-west")[0].id == "eu-west-orders-db"
    assert not p.tier_healthy("orders-db", "eu-west")
    assert p.tiers[("pricing-cache", "us-east")].generation == 1


def test_each_demo_step_removes_one_cause() -> None:
    p = platform("seed_outage")
    assert len(p.active_faults()) == 4
    DEMO[0](p)
    assert len(p.active_faults()) == 3
    DEMO[1](p)
    p.step(60)  # the pool drains over simulated seconds
    assert len(p.active_faults()) == 2
    DEMO[2](p)
    p.step(60)  # the restart completes after restart_seconds
    assert len(p.active_faults()) == 1


def test_recovery_decays_over_simulated_minutes() -> None:
    p = platform("full_recovery")
    disable_canary("us-east")(p)
    disable_canary("eu-west")(p)
    p.step(30)
    assert not p.recovered("eu-west")
    p.step(600)
    assert p.recovered("eu-west") and p.recovered("us-east")


def test_full_recovery() -> None:
    p = run(platform("full_recovery"), [disable_canary("us-east"), disable_canary("eu-west")])
    assert p.recovered("us-east") and p.recovered("eu-west")


def test_partial_mixed() -> None:
    p = run(platform("partial_mixed"), [disable_canary("eu-west")])
    assert p.recovered("eu-west") and not p.recovered("us-east")


def test_flag_conflict_initial_state_and_revert() -> None:
    p = platform("flag_conflict")
    assert p.rules[(FLAG, RULE, "us-east")] is False  # not what the commander expects
    assert p.set_rule(FLAG, RULE, "eu-west", False)
    p.step(10)
    assert p.rules[(FLAG, RULE, "eu-west")] is False
    p.step(30)
    assert p.rules[(FLAG, RULE, "eu-west")] is True  # config sync put it back
    p.step(600)
    assert not p.recovered("eu-west")


def test_frozen_metrics_stop_updating() -> None:
    p = platform("frozen_metrics")
    p.step(120)
    frozen = p.snapshot()["metrics"]
    assert frozen["us-east"]["computed_at"] == 120
    run(p, DEMO)
    assert p.snapshot()["metrics"] == frozen
    assert p.level["us-east"][0] < HEALTHY_ERROR_RATIO  # reality moved on underneath


def test_no_improvement() -> None:
    p = platform("no_improvement")
    p.step(60)
    before = {r: p.metrics[r].error_ratio for r in p.metrics}
    run(p, DEMO)
    for region, err in before.items():
        assert p.metrics[region].error_ratio == pytest.approx(err, rel=0.15)
        assert not p.recovered(region)


def test_actions_report_whether_they_changed_anything() -> None:
    p = platform("seed_outage")
    assert p.set_rule(FLAG, RULE, "eu-west", False) is True
    assert p.set_rule(FLAG, RULE, "eu-west", False) is False
    assert p.scale_pool("cache-invalidation", "us-east", 0) is True
    assert p.scale_pool("cache-invalidation", "us-east", 0) is False
    with pytest.raises(KeyError):
        p.set_rule(FLAG, "nope", "eu-west", False)


actions = st.lists(
    st.tuples(
        st.sampled_from(["rule", "drain", "restart", "scale_up", "wait"]),
        st.sampled_from(["us-east", "eu-west"]),
        st.floats(min_value=0.0, max_value=200.0),
    ),
    max_size=12,
)


def apply(p: Platform, plan: list[tuple[str, str, float]]) -> None:
    for kind, region, dt in plan:
        if kind == "rule":
            p.set_rule(FLAG, RULE, region, False)
        elif kind == "drain":
            p.scale_pool("cache-invalidation", region, 0)
        elif kind == "scale_up":
            p.scale_pool("cache-invalidation", region, 4)
        elif kind == "restart":
            p.restart_tier("pricing-cache", region)
        p.step(dt)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(scenarios.available()),
    seed=st.integers(0, 2**32),
    plan=actions,
)
def test_property_bounds_and_determinism(
    name: str, seed: int, plan: list[tuple[str, str, float]]
) -> None:
    a, b = platform(name, seed), platform(name, seed)
    apply(a, plan)
    apply(b, plan)
    assert a.snapshot() == b.snapshot()
    for m in a.metrics.values():
        assert 0.0 <= m.error_ratio <= 1.0
        assert m.queue_depth >= 0.0 and m.request_rate >= 0.0
        assert m.errors_total <= m.requests_total + 1e-9
    for pool in a.pools.values():
        assert pool.ready >= 0
