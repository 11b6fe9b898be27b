"""The fold counts each record the rules did not honour exactly once, and only those, and
a record it ignored never stops it folding what comes after (DESIGN.md invariants 8, 11).

Also: the last gathered observation is kept, and a scale in a region with no drained
pool folds. Kills fold survivors of `make mutation`: the vote handlers' `ignored_controls` count
(`x__apply_ApprovalRecorded/Declined__mutmut_1, 6, 7, 8`) and `evolve`'s comparison of
the ignored counts before and after a record (`x_evolve__mutmut_11, 16`)."""

from __future__ import annotations

import pytest
from builders import ALICE, CAROL, MALLORY, OLIVE, T0, History
from test_approvals import DRAIN, history, state_of, vote

from conn_core.fold import fold
from conn_schemas.observations import Observation, WorkerPoolState
from conn_schemas.values import Actor, Role, ScaleWorkerPool

OTTO = Actor(kind="human", id="otto", roles=(Role.OBSERVER,))


@pytest.mark.parametrize("approve", [True, False])
def test_a_vote_the_rules_honour_is_not_counted_as_ignored(approve: bool) -> None:
    h, cid = history()
    before = state_of(h).packet_changed_at
    vote(h, cid, CAROL, approve=approve)
    state = state_of(h)
    assert state.ignored_controls == 0
    assert state.packet_changed_at > before  # folded, not returned early


def test_each_approval_naming_a_stale_packet_is_ignored_once() -> None:
    h, cid = history()
    vote(h, cid, CAROL, sha="f" * 64)
    assert state_of(h).ignored_controls == 1
    vote(h, cid, MALLORY, sha="e" * 64)
    assert state_of(h).ignored_controls == 2


def test_each_decline_by_someone_not_entitled_is_ignored_once() -> None:
    h, cid = history()
    vote(h, cid, OLIVE, approve=False)  # an observer may not vote
    assert state_of(h).ignored_controls == 1
    vote(h, cid, OTTO, approve=False)  # nor another observer
    assert state_of(h).ignored_controls == 2
    assert state_of(h).approvals[cid].declined_by is None


def test_an_ignored_authority_record_does_not_stop_the_fold() -> None:
    h = History("inc-ignored-then-more").open()
    h.declare()
    h.declare(holder="mallory", actor=MALLORY)  # not the holder: ignored
    cid = h.direct(DRAIN, actor=ALICE)
    h.hold()
    state = fold(h.events, h.incident_id)
    assert state.ignored_authority == 1
    assert state.hold is not None
    assert state.directives[cid].superseded_at is not None


def test_the_last_observation_is_the_last_gathered() -> None:
    """Kills `x__apply_StateGathered__mutmut_5` (the observation not kept)."""
    h = History("inc-observation").open()
    h.declare()
    seen = Observation(
        pools=(
            WorkerPoolState(
                pool="checkout-workers",
                region="eu-west",
                desired_replicas=7,
                ready_replicas=7,
                observed_at=T0,
            ),
        )
    )
    h.gather(None, purpose="directed", observation=seen)
    assert fold(h.events, h.incident_id).last_observation == seen


def test_scaling_a_pool_in_a_region_with_nothing_drained_folds() -> None:
    """Kills `x__apply_StepStarted__mutmut_47, 49` (no default set for a region without
    drained pools: the fold would raise on a scale there)."""
    h = History("inc-scale").open()
    h.declare()
    scale = ScaleWorkerPool(pool="checkout-workers", region="eu-west", replicas=4)
    cid = h.direct(scale)
    h.accept(cid, scale)
    h.start(cid, scale)
    state = fold(h.events, h.incident_id)
    assert state.directives[cid].started_by == "x1"
    assert state.drained_pools.get("eu-west", set()) == set()
