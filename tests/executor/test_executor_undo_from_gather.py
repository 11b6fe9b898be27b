"""The undo recorded with StepStarted uses the state the pre-step gather read of the
step's exact target (no second read of the target); only when that gather has no
reading of the target (unreadable, or no gather) is the target read again — so the
undo is exactly what reading the target would give for that state, never a guess from
another target's reading."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from conn_adapters.config import Adapters
from conn_core.rules import observed_target
from conn_core.undo import undo_for
from conn_executor.undo import record_undo
from conn_schemas.observations import FlagRuleState, Observation, TierState, WorkerPoolState
from conn_schemas.values import (
    Action,
    DisableFlagRule,
    DrainWorkerPool,
    RestartDependencyTier,
    ScaleWorkerPool,
)

AT = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
RULE = FlagRuleState(flag="pricing", rule="canary", region="us-east", enabled=True, observed_at=AT)
OTHER_RULE = RULE.model_copy(update={"region": "eu-west", "enabled": False})
POOL = WorkerPoolState(
    pool="workers", region="us-east", desired_replicas=6, ready_replicas=6, observed_at=AT
)
OTHER_POOL = POOL.model_copy(update={"pool": "cache", "desired_replicas": 2})
TIER = TierState(tier="orders-db", region="us-east", healthy=True, generation=7, observed_at=AT)
OTHER_TIER = TIER.model_copy(update={"region": "eu-west", "generation": 3})

ACTIONS: list[Action] = [
    DisableFlagRule(flag="pricing", rule="canary", region="us-east"),
    DrainWorkerPool(pool="workers", region="us-east"),
    ScaleWorkerPool(pool="workers", region="us-east", replicas=3),
    RestartDependencyTier(tier="orders-db", region="us-east"),
]


class Target:
    """Answers each read with the same state as the gather saw, and counts the reads."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    async def get_rule(self, flag: str, rule: str, region: str) -> FlagRuleState:
        self.reads.append("get_rule")
        return RULE

    async def get_pool(self, pool: str, region: str) -> WorkerPoolState:
        self.reads.append("get_pool")
        return POOL

    async def get_tier(self, tier: str, region: str) -> TierState:
        self.reads.append("get_tier")
        return TIER


def adapters(target: Target) -> Adapters:
    return Adapters(flags=target, orchestrator=target, metrics=target, record=target)  # type: ignore[arg-type]


GATHERED = Observation(
    flags=(OTHER_RULE, RULE), pools=(OTHER_POOL, POOL), tiers=(TIER,), metrics=(), errors=()
)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.action.value)
def test_the_undo_from_the_gather_equals_the_undo_from_a_read(action: Action) -> None:
    from_gather, from_read = Target(), Target()
    got = asyncio.run(record_undo(adapters(from_gather), action, 1.0, gathered=GATHERED))
    expected = asyncio.run(record_undo(adapters(from_read), action, 1.0))
    assert got == expected
    assert got is not None and got == undo_for(action, observed_target(GATHERED, action))
    assert from_gather.reads == []  # no second read of the target
    assert len(from_read.reads) == 1


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.action.value)
def test_a_gather_without_the_target_falls_back_to_reading_it(action: Action) -> None:
    """The gather read other targets only (or the target's read failed): the undo is
    not taken from another target's state; the target is read now."""
    others = Observation(
        flags=(OTHER_RULE,), pools=(OTHER_POOL,), tiers=(OTHER_TIER,), metrics=(), errors=()
    )
    assert observed_target(others, action) is None
    target = Target()
    got = asyncio.run(record_undo(adapters(target), action, 1.0, gathered=others))
    assert len(target.reads) == 1
    assert got == asyncio.run(record_undo(adapters(Target()), action, 1.0))
