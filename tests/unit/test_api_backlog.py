"""The pipeline backlog behind the API's load shedding (conn_api.backlog), as the
contract sees it: a directive is open from its DirectiveIssued until an outcome with
its correlation id, and never longer than the window by its own occurred_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conn_api.backlog import TERMINAL, Backlog
from conn_schemas.signing import SignerRole

T0 = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
EXEC = SignerRole.EXECUTOR


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def test_a_directive_is_open_until_its_outcome() -> None:
    clock = Clock()
    b = Backlog(30, clock)
    b.observe("DirectiveIssued", "a", T0, EXEC)
    b.observe("DirectiveIssued", "b", T0, EXEC)
    b.observe("StepStarted", "a", T0, EXEC)  # not an outcome
    b.observe("StateGathered", None, T0, EXEC)  # no correlation id: nothing
    assert b.size() == 2
    for outcome in sorted(TERMINAL):
        b.observe("DirectiveIssued", outcome, T0, EXEC)
        b.observe(outcome, outcome, T0, EXEC)
    b.observe("StateGathered", "a", T0, EXEC)
    assert b.size() == 1


def test_old_directives_are_forgotten_and_replayed_history_counts_nothing() -> None:
    clock = Clock()
    b = Backlog(30, clock)
    b.observe("DirectiveIssued", "old", T0 - timedelta(hours=3), EXEC)  # replayed at start-up
    assert b.size() == 0
    b.observe("DirectiveIssued", "waits", T0, EXEC)  # e.g. awaiting approval
    clock.at = T0 + timedelta(seconds=29)
    assert b.size() == 1
    clock.at = T0 + timedelta(seconds=31)
    assert b.size() == 0


def test_only_the_pipeline_ends_a_directive() -> None:
    """An integration may sign IncidentRecordUpdated; naming an open directive's
    correlation id must not shorten the backlog (the load shedding would be weakened)."""
    b = Backlog(30, Clock())
    b.observe("DirectiveIssued", "a", T0, SignerRole.API)
    for outcome in sorted(TERMINAL):
        b.observe(outcome, "a", T0, SignerRole.INTEGRATION)
        b.observe(outcome, "a", T0, SignerRole.PACKAGER)
        b.observe(outcome, "a", T0, None)
    assert b.size() == 1
    b.observe("DirectiveRefused", "a", T0, SignerRole.API)  # the API's own refusal
    assert b.size() == 0
