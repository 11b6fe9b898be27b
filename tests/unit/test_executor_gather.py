"""What the executor reads before a step and for a directed gather."""

from __future__ import annotations

from pathlib import Path

from conn_core.authority import parse_authority
from conn_executor.gather import plan_for_regions, plan_for_step
from conn_schemas.values import DrainWorkerPool, FlagRuleExpectation

ROOT = Path(__file__).resolve().parents[2]


def test_step_plan_reads_target_expectation_and_region_health() -> None:
    plan = plan_for_step(
        DrainWorkerPool(pool="cache-invalidation", region="us-east"),
        FlagRuleExpectation(
            flag="checkout-pricing", rule="canary-10pct", region="eu-west", enabled=True
        ),
    )
    assert plan.pools == {("cache-invalidation", "us-east")}
    assert plan.flags == {("checkout-pricing", "canary-10pct", "eu-west")}
    assert plan.regions == {"us-east"}


def test_directed_gather_covers_authority_targets_in_all_regions_when_none_given() -> None:
    authority, _ = parse_authority((ROOT / "runbooks" / "checkout-authority.yaml").read_bytes())
    plan = plan_for_regions(authority, ())
    assert plan.regions == {"us-east", "eu-west"}
    assert ("checkout-pricing", "canary-10pct", "eu-west") in plan.flags
    assert ("orders-db", "us-east") in plan.tiers  # reserved targets are still observed
    only_east = plan_for_regions(authority, ("us-east",))
    assert {r for *_, r in only_east.flags} == {"us-east"}
