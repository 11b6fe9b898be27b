"""DESIGN.md invariant 4 on the authority file, where mutation testing found the net thin.

"The boundary comes from a versioned runbook file (its hash recorded); during an
incident it may only narrow." `widenings` answers "does the new boundary let the holder
do more?"; the answer must not depend on how a boundary is spelled (one grant or two),
must report every widening with words that name it, and must never report a narrowing.
A file that is not a valid boundary is refused with an error that says where.
"""

from __future__ import annotations

import pytest
from builders import RUNBOOK

from conn_core.authority import AuthorityFileError, parse_authority, widenings
from conn_schemas.values import (
    ActionGrant,
    ActionType,
    AuthorityBoundary,
    Reservation,
    VerificationCriteria,
)

BASE, _ = parse_authority(RUNBOOK.read_bytes(), holder="alice")


def _u(a: AuthorityBoundary, **kw: object) -> AuthorityBoundary:
    return a.model_copy(update=kw)


def _split_by_region(a: AuthorityBoundary) -> AuthorityBoundary:
    """The same boundary with each grant spelled once per declared region."""
    grants = tuple(
        g.model_copy(update={"regions": (region,)}) for g in a.allowed for region in a.regions
    )
    return _u(a, allowed=grants)


def test_a_boundary_spelled_one_grant_per_region_is_the_same_boundary() -> None:
    split = _split_by_region(BASE)
    assert widenings(BASE, split) == []
    assert widenings(split, BASE) == []


def test_dropping_one_of_two_grants_of_an_action_narrows() -> None:
    split = _split_by_region(BASE)
    last = split.allowed[-1]
    fewer = _u(split, allowed=split.allowed[:-1])
    assert widenings(split, fewer) == []
    assert widenings(fewer, split) == [
        f"{last.action.value} of {t} in {last.regions[0]} allowed" for t in sorted(last.targets)
    ]


def test_a_grant_naming_an_undeclared_region_allows_nothing_there() -> None:
    """Regions outside the declared ones are refused anyway: naming one in a grant is
    not a widening, and the widening named for a new grant region is only the declared
    one."""
    named = _u(
        BASE,
        allowed=tuple(
            g.model_copy(update={"regions": ("us-east", "ap-south")}) for g in BASE.allowed
        ),
    )
    only_us = _u(
        BASE, allowed=tuple(g.model_copy(update={"regions": ("us-east",)}) for g in BASE.allowed)
    )
    assert widenings(only_us, named) == []
    assert all("ap-south" not in w for w in widenings(named, BASE))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda a: _u(a, reservations=()), "reservation of restart_dependency_tier of orders-db"),
        (
            lambda a: _u(a, allowed=tuple(g.model_copy(update={"targets": ()}) for g in a.allowed)),
            "any target",
        ),
        (
            lambda a: _u(
                a,
                allowed=tuple(
                    g.model_copy(update={"targets": (*g.targets, "payments")}) if g.targets else g
                    for g in a.allowed
                ),
            ),
            "of payments in",
        ),
        (
            lambda a: _u(
                a,
                default_verification=a.default_verification.model_copy(
                    update={"max_error_rate": 0.5}
                ),
            ),
            "verification of the default: max_error_rate raised",
        ),
        (
            lambda a: _u(
                a, default_verification=a.default_verification.model_copy(update={"samples": 1})
            ),
            "verification of the default: samples lowered",
        ),
        (
            lambda a: _u(
                a,
                default_verification=a.default_verification.model_copy(
                    update={"scope": "step_regions"}
                ),
            ),
            "verification of the default: scope narrowed",
        ),
    ],
)
def test_every_widening_is_named_in_words(change, words: str) -> None:  # type: ignore[no-untyped-def]
    found = widenings(BASE, change(BASE))
    assert found and all(isinstance(w, str) and w for w in found), found
    assert any(words in w for w in found), found


def test_a_target_granted_alone_is_not_named_as_any_target() -> None:
    found = widenings(
        _u(BASE, allowed=()),
        _u(BASE, allowed=(ActionGrant(action=ActionType.DRAIN_WORKER_POOL, targets=("p",)),)),
    )
    assert found == ["action drain_worker_pool allowed"]
    wider = _u(
        BASE,
        allowed=(ActionGrant(action=ActionType.DRAIN_WORKER_POOL, targets=("p", "q")),),
    )
    narrow = _u(BASE, allowed=(ActionGrant(action=ActionType.DRAIN_WORKER_POOL, targets=("p",)),))
    assert widenings(narrow, wider) == [
        "drain_worker_pool of q in eu-west allowed",
        "drain_worker_pool of q in us-east allowed",
    ]


def _with_signal(a: AuthorityBoundary, limit: float | None) -> AuthorityBoundary:
    extra = {} if limit is None else {"p99_latency_seconds": limit}
    return _u(
        a, default_verification=a.default_verification.model_copy(update={"extra_max": extra})
    )


def test_an_extra_signal_may_be_tightened_but_not_dropped_or_loosened() -> None:
    base = _with_signal(BASE, 0.5)
    assert widenings(base, base) == []
    assert widenings(base, _with_signal(BASE, 0.4)) == []
    assert widenings(base, _with_signal(BASE, None)) == [
        "verification of the default: signal p99_latency_seconds no longer checked"
    ]
    assert widenings(base, _with_signal(BASE, 0.6)) == [
        "verification of the default: p99_latency_seconds limit raised from 0.5 to 0.6"
    ]


def test_criteria_added_for_an_action_are_compared_with_the_default() -> None:
    """An action without criteria of its own is judged by the default; giving it looser
    ones of its own is a widening, tighter ones are not."""
    gather = ActionType.GATHER_STATE
    assert gather not in BASE.verification
    looser = BASE.default_verification.model_copy(update={"max_error_rate": 0.5})
    tighter = BASE.default_verification.model_copy(update={"max_error_rate": 0.001})
    assert widenings(BASE, _u(BASE, verification={**BASE.verification, gather: looser})) == [
        "verification of gather_state: max_error_rate raised from 0.02 to 0.5"
    ]
    assert widenings(BASE, _u(BASE, verification={**BASE.verification, gather: tighter})) == []
    assert isinstance(looser, VerificationCriteria)


def test_an_unchanged_reservation_that_grants_its_target_is_no_widening() -> None:
    only_restart = _u(
        BASE,
        allowed=(ActionGrant(action=ActionType.RESTART_DEPENDENCY_TIER, targets=("a-tier",)),),
        reservations=(
            Reservation(action=ActionType.RESTART_DEPENDENCY_TIER, target="b-tier", team="x"),
        ),
    )
    assert widenings(only_restart, only_restart) == []
    more = _u(
        only_restart,
        reservations=(
            *only_restart.reservations,
            Reservation(action=ActionType.RESTART_DEPENDENCY_TIER, target="c-tier", team="y"),
        ),
    )
    assert widenings(only_restart, more) == [
        "restart_dependency_tier of c-tier granted to team y by a reservation"
    ]


def test_the_declaring_commander_keeps_the_files_holder_team() -> None:
    parsed, _ = parse_authority(RUNBOOK.read_bytes(), holder="mallory")
    assert parsed.holder.identity == "mallory" and parsed.holder.team == "incident-command"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"name: [unclosed\n", "not valid YAML"),
        (b"- a list\n", "must be a YAML mapping"),
        (
            RUNBOOK.read_bytes().replace(
                b"max_consequential_steps: 10", b"max_consequential_steps: -1"
            ),
            "blast_radius.max_consequential_steps: ",
        ),
    ],
)
def test_an_invalid_file_is_refused_saying_where(content: bytes, words: str) -> None:
    with pytest.raises(AuthorityFileError) as caught:
        parse_authority(content, holder="alice")
    assert words in str(caught.value), str(caught.value)
    if words.startswith("blast_radius"):
        assert str(caught.value).endswith("(1 errors)")
