"""The look before an undo (an inverse step), as the contract names its refusals.

DESIGN.md: a directive whose target is not what was expected is refused and the fold
holds ("expectation conflict"); one whose target is partially changed is refused as
`target_partially_changed` and holds as a partial state, listed in the packet. The
refusal's reason code is what the API, the fold's hold and the packet carry, so each
case is pinned to its code and to a detail that names the target.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conn_core.rules import Refused, check_inverse_observation
from conn_schemas.observations import FlagRuleState, Observation, WorkerPoolState
from conn_schemas.values import EnableFlagRule, RefusalReason, ScaleWorkerPool

AT = datetime(2026, 12, 4, tzinfo=UTC)
ENABLE = EnableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
SCALE = ScaleWorkerPool(pool="checkout-workers", region="eu-west", replicas=4)


def _rule(enabled: bool, region: str = "eu-west") -> FlagRuleState:
    return FlagRuleState(
        flag="checkout-pricing", rule="canary-10pct", region=region, enabled=enabled, observed_at=AT
    )


def _pool(desired: int, ready: int, region: str = "eu-west") -> WorkerPoolState:
    return WorkerPoolState(
        pool="checkout-workers",
        region=region,
        desired_replicas=desired,
        ready_replicas=ready,
        observed_at=AT,
    )


@pytest.mark.parametrize(
    ("action", "observation", "reason", "words"),
    [
        (ENABLE, Observation(), RefusalReason.EXPECTATION_CONFLICT, "canary-10pct"),
        (
            ENABLE,
            Observation(flags=(_rule(False, region="us-east"),)),
            RefusalReason.EXPECTATION_CONFLICT,
            "not observable",
        ),
        (ENABLE, Observation(flags=(_rule(True),)), RefusalReason.PARTIAL_STATE, "already enabled"),
        (SCALE, Observation(), RefusalReason.EXPECTATION_CONFLICT, "checkout-workers"),
        (
            SCALE,
            Observation(pools=(_pool(0, 0, region="us-east"),)),
            RefusalReason.EXPECTATION_CONFLICT,
            "not observable",
        ),
        (SCALE, Observation(pools=(_pool(4, 2),)), RefusalReason.PARTIAL_STATE, "mid-change"),
        (SCALE, Observation(pools=(_pool(4, 4),)), RefusalReason.PARTIAL_STATE, "already at 4"),
    ],
)
def test_each_refusal_carries_its_reason_and_names_the_target(
    action: EnableFlagRule | ScaleWorkerPool,
    observation: Observation,
    reason: RefusalReason,
    words: str,
) -> None:
    refused = check_inverse_observation(action, observation)
    assert isinstance(refused, Refused), refused
    assert refused.reason is reason
    assert isinstance(refused.detail, str) and words in refused.detail, refused.detail


def test_a_clean_target_not_yet_in_the_undone_state_is_allowed() -> None:
    assert check_inverse_observation(ENABLE, Observation(flags=(_rule(False),))) is None
    assert check_inverse_observation(SCALE, Observation(pools=(_pool(0, 0),))) is None
