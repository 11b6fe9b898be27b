"""Invariant 4: the boundary comes from a versioned runbook file; during an incident
it may only narrow, unless a second authorized person who is not the holder
approves the change in the ledger. The holder can never widen their own boundary.

`widenings(old, new)` is pure: checked here against hand-made narrowings and
widenings of the real runbook (properties), then the rules and the fold.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from builders import ALICE, CAROL, DANA, MALLORY, OLIVE, ROOT_ADMIN, RUNBOOK, History
from hypothesis import given, settings
from hypothesis import strategies as st

from conn_core.authority import parse_authority, widenings
from conn_core.fold import fold
from conn_core.rules import check_authority
from conn_schemas import events as ev
from conn_schemas.values import (
    ActionGrant,
    ActionType,
    AuthorityBoundary,
    Reservation,
    Role,
)

BASE, BASE_SHA = parse_authority(RUNBOOK.read_bytes(), holder="alice")
WIDER = RUNBOOK.read_bytes().replace(b"max_consequential_steps: 10", b"max_consequential_steps: 30")
NARROWER = RUNBOOK.read_bytes().replace(b"regions: [us-east, eu-west]", b"regions: [us-east]")

Change = Callable[[AuthorityBoundary], AuthorityBoundary]


def _u(a: AuthorityBoundary, **kw: object) -> AuthorityBoundary:
    return a.model_copy(update=kw)


NARROWINGS: dict[str, Change] = {
    "drop a region": lambda a: _u(a, regions=a.regions[:1]),
    "drop an action": lambda a: _u(
        a, allowed=tuple(g for g in a.allowed if g.action is not ActionType.DRAIN_WORKER_POOL)
    ),
    "drop a target": lambda a: _u(
        a,
        allowed=tuple(
            g.model_copy(update={"targets": g.targets[:1]}) if g.targets else g for g in a.allowed
        ),
    ),
    "pin a grant to one region": lambda a: _u(
        a, allowed=tuple(g.model_copy(update={"regions": ("us-east",)}) for g in a.allowed)
    ),
    "add a reservation": lambda a: _u(
        a,
        reservations=(
            *a.reservations,
            Reservation(
                action=ActionType.RESTART_DEPENDENCY_TIER, target="pricing-cache", team="sre"
            ),
        ),
    ),
    "lower a limit": lambda a: _u(
        a, blast_radius=a.blast_radius.model_copy(update={"max_consequential_steps": 3})
    ),
    "tighten verification": lambda a: _u(
        a,
        default_verification=a.default_verification.model_copy(
            update={"max_error_rate": 0.01, "samples": 5, "max_reading_age_seconds": 5}
        ),
    ),
    "drop a takeover team": lambda a: _u(a, takeover_teams=a.takeover_teams[:1]),
    "drop a role": lambda a: _u(a, roles_may_direct=(Role.COMMANDER,)),
    "new version name": lambda a: _u(a, version="2026-11-23.1", name="checkout-outage-v2"),
}

WIDENINGS: dict[str, Change] = {
    "add a region": lambda a: _u(a, regions=(*a.regions, "ap-south")),
    "add an action target": lambda a: _u(
        a,
        allowed=tuple(
            g.model_copy(update={"targets": (*g.targets, "payments")}) if g.targets else g
            for g in a.allowed
        ),
    ),
    "any target": lambda a: _u(
        a, allowed=tuple(g.model_copy(update={"targets": ()}) for g in a.allowed)
    ),
    "drop a reservation": lambda a: _u(a, reservations=()),
    "reservation to another team": lambda a: _u(
        a,
        reservations=tuple(
            r.model_copy(update={"team": "incident-command"}) for r in a.reservations
        ),
    ),
    "raise a limit": lambda a: _u(
        a, blast_radius=a.blast_radius.model_copy(update={"max_restarts_per_tier_region": 5})
    ),
    "weaker verification": lambda a: _u(
        a,
        verification={
            k: v.model_copy(update={"max_error_rate": 0.5}) for k, v in a.verification.items()
        },
    ),
    "step regions only": lambda a: _u(
        a,
        default_verification=a.default_verification.model_copy(update={"scope": "step_regions"}),
    ),
    "fewer samples": lambda a: _u(
        a, default_verification=a.default_verification.model_copy(update={"samples": 1})
    ),
    "add a takeover team": lambda a: _u(a, takeover_teams=(*a.takeover_teams, "anyone")),
    "observers may direct": lambda a: _u(a, roles_may_direct=(*a.roles_may_direct, Role.OBSERVER)),
}


def test_the_same_boundary_is_not_a_widening() -> None:
    assert widenings(BASE, BASE) == []


@pytest.mark.parametrize("name", sorted(WIDENINGS))
def test_each_kind_of_widening_is_named(name: str) -> None:
    assert widenings(BASE, WIDENINGS[name](BASE)), name


def test_a_new_action_and_a_reservation_that_grants_are_widenings() -> None:
    narrow = _u(BASE, allowed=(ActionGrant(action=ActionType.GATHER_STATE),), reservations=())
    assert "action drain_worker_pool allowed" in widenings(narrow, BASE)
    only_restart = _u(
        BASE,
        allowed=(
            ActionGrant(action=ActionType.RESTART_DEPENDENCY_TIER, targets=("pricing-cache",)),
        ),
        reservations=(),
    )
    granted = _u(
        only_restart,
        reservations=(
            Reservation(action=ActionType.RESTART_DEPENDENCY_TIER, target="orders-db", team="x"),
        ),
    )
    assert any("granted to team x" in w for w in widenings(only_restart, granted))


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(sorted(NARROWINGS)), min_size=1))
def test_any_combination_of_narrowings_is_not_a_widening(names: set[str]) -> None:
    new = BASE
    for name in sorted(names):
        new = NARROWINGS[name](new)
    assert widenings(BASE, new) == []


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.sampled_from(sorted(NARROWINGS))),
    st.sets(st.sampled_from(sorted(WIDENINGS)), min_size=1),
)
def test_any_widening_is_caught_whatever_else_narrows(narrow: set[str], wide: set[str]) -> None:
    new = BASE
    for name in sorted(narrow):
        new = NARROWINGS[name](new)
    for name in sorted(wide):
        new = WIDENINGS[name](new)
    assert widenings(BASE, new), (narrow, wide)


# --- the rules and the fold ----------------------------------------------------------------


def declared(h: History) -> tuple[str | None, int]:
    state = fold(h.events, h.incident_id)
    assert state.authority is not None
    return state.authority_sha256, state.ignored_authority


def test_the_holder_narrows_freely() -> None:
    h = History().open().declare()
    h.declare(content=NARROWER)
    state = fold(h.events, h.incident_id)
    assert state.authority is not None and state.authority.regions == ("us-east",)
    assert state.ignored_authority == 0


def test_the_holder_cannot_widen_their_own_boundary() -> None:
    h = History().open().declare()
    h.declare(content=WIDER)  # e.g. a record written around the API
    sha, ignored = declared(h)
    assert sha == BASE_SHA and ignored == 1
    # ...nor approve their own proposal
    digest = h.propose(WIDER)
    h.approve("p-1", digest, ALICE)
    h.declare(content=WIDER, actor=ALICE, approval="p-1")
    sha, ignored = declared(h)
    assert sha == BASE_SHA and ignored == 3


def test_nobody_but_the_holder_declares_and_only_commanders() -> None:
    h = History().open().declare()
    h.declare(content=NARROWER, actor=MALLORY, holder="mallory")
    h.declare(content=NARROWER, actor=OLIVE, holder="olive")
    sha, ignored = declared(h)
    assert sha == BASE_SHA and ignored == 2


@pytest.mark.parametrize("approver", [OLIVE, DANA], ids=["observer", "specialist"])
def test_an_approver_needs_the_role(approver) -> None:  # type: ignore[no-untyped-def]
    h = History().open().declare()
    digest = h.propose(WIDER)
    h.approve("p-1", digest, approver)
    state = fold(h.events, h.incident_id)
    assert state.authority_proposals["p-1"].approved_by is None and state.ignored_authority == 1


@pytest.mark.parametrize("approver", [CAROL, ROOT_ADMIN], ids=["commander", "admin"])
def test_a_second_person_approves_and_the_approved_content_applies(approver) -> None:  # type: ignore[no-untyped-def]
    h = History().open().declare()
    digest = h.propose(WIDER)
    h.approve("p-1", digest, approver)
    h.declare(content=WIDER, actor=approver, approval="p-1")
    state = fold(h.events, h.incident_id)
    assert state.authority_sha256 == digest and state.ignored_authority == 0
    assert (
        state.authority is not None and state.authority.blast_radius.max_consequential_steps == 30
    )
    assert state.holder is not None and state.holder.identity == "alice"
    assert state.authority_proposals["p-1"].applied
    h.declare(content=WIDER, actor=approver, approval="p-1")  # replayed: once only
    assert fold(h.events, h.incident_id).ignored_authority == 1


def test_an_approval_for_other_content_or_an_outdated_base_does_nothing() -> None:
    h = History().open().declare()
    digest = h.propose(WIDER)
    h.approve("p-1", "f" * 64, ROOT_ADMIN)  # not what was proposed
    h.declare(content=NARROWER)  # the authority in force changed meanwhile
    h.approve("p-1", digest, ROOT_ADMIN)
    h.declare(content=WIDER, actor=ROOT_ADMIN, approval="p-1")
    state = fold(h.events, h.incident_id)
    assert state.authority is not None and state.authority.regions == ("us-east",)
    assert state.ignored_authority == 3


def test_a_proposal_lapses_when_the_conn_moves() -> None:
    h = History().open().declare()
    digest = h.propose(WIDER)
    h.request_takeover()
    sha = h.packet()
    h.take_over(sha, DANA)
    h.approve("p-1", digest, ROOT_ADMIN)
    state = fold(h.events, h.incident_id)
    assert state.authority_proposals["p-1"].approved_by is None
    assert state.ignored_authority == 1


def test_an_approved_change_does_not_apply_once_the_conn_moved() -> None:
    h = History().open().declare()
    digest = h.propose(WIDER)
    h.approve("p-1", digest, ROOT_ADMIN)
    h.request_takeover()
    sha = h.packet()
    h.take_over(sha, DANA)
    h.declare(content=WIDER, actor=ROOT_ADMIN, approval="p-1")
    state = fold(h.events, h.incident_id)
    assert state.authority_sha256 == BASE_SHA and state.ignored_authority == 1


def test_the_api_and_the_fold_ask_the_same_question() -> None:
    h = History().open().declare()
    state = fold(h.events, h.incident_id)
    wider, digest = parse_authority(WIDER, holder="alice")
    event = ev.new_event(
        ev.AuthorityDeclared,
        incident_id=h.incident_id,
        payload=ev.AuthorityDeclaredPayload(
            authority=wider, source_file="x.yaml", content_sha256=digest
        ),
        actor=ALICE,
        producer="test",
    )
    refusal = check_authority(state, event)
    assert refusal is not None and "max_consequential_steps raised from 10 to 30" in refusal.detail
