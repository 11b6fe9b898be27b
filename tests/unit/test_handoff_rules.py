"""Invariant 9 in the core: only the addressed team accepts, explicitly, naming the
exact hash of the current packet; a packet the incident has moved past cannot be
accepted (a newer one is due), including in the window before it is published."""

from __future__ import annotations

from builders import ALICE, DANA, History

from conn_core.fold import fold
from conn_core.rules import check_control
from conn_core.state import IncidentState
from conn_schemas import events as ev
from conn_schemas.values import Actor, RefusalReason, Role, Verdict, Verify

ROB = Actor(kind="human", id="rob", roles=(Role.SPECIALIST,), team="rollback-authority")


def accept(h: History, sha: str, actor: Actor, team: str) -> RefusalReason | None:
    state: IncidentState = fold(h.events, h.incident_id)
    event = ev.new_event(
        ev.TakeoverAccepted,
        incident_id=h.incident_id,
        payload=ev.TakeoverAcceptedPayload(team=team, packet_sha256=sha),
        actor=actor,
        producer="test",
    )
    refusal = check_control(state, event)
    return None if refusal is None else refusal.reason


def on_hold_with_packet() -> tuple[History, str]:
    h = History().open().declare()
    h.hold()
    return h, h.packet("a" * 64, team=None)  # a hold packet: any takeover team


def test_the_current_hold_packet_can_be_accepted_by_a_takeover_team() -> None:
    h, sha = on_hold_with_packet()
    assert accept(h, sha, DANA, "database-platform") is None
    assert accept(h, sha, ROB, "rollback-authority") is None


def test_once_a_handoff_is_requested_only_the_addressed_team_may_accept() -> None:
    """The window before the handoff packet is published: the hold packet is the
    latest published one, but the takeover was requested for database-platform."""
    h, sha = on_hold_with_packet()
    h.request_takeover("database-platform")
    assert accept(h, sha, ROB, "rollback-authority") is RefusalReason.TARGET_NOT_ALLOWED
    # ...and the addressed team must wait for the packet that shows the handoff
    assert accept(h, sha, DANA, "database-platform") is RefusalReason.STALE_BASE
    handoff = h.packet("b" * 64, team="database-platform")
    assert accept(h, handoff, ROB, "rollback-authority") is RefusalReason.TARGET_NOT_ALLOWED
    assert accept(h, handoff, DANA, "database-platform") is None


def test_a_packet_the_incident_moved_past_cannot_be_accepted() -> None:
    h, sha = on_hold_with_packet()
    verify = h.direct(Verify())
    h.accept(verify, Verify(), consequential=False)
    h.snapshot(verify, Verdict.NOT_RECOVERED)  # a later failing verdict: new content
    assert accept(h, sha, DANA, "database-platform") is RefusalReason.STALE_BASE
    newer = h.packet("c" * 64, team=None)
    assert accept(h, sha, DANA, "database-platform") is RefusalReason.STALE_BASE
    assert accept(h, newer, DANA, "database-platform") is None


def test_records_that_change_no_packet_content_keep_it_current() -> None:
    h, sha = on_hold_with_packet()
    h.alert()
    h.note()
    h.resume(actor=DANA)  # not the holder: ignored
    assert accept(h, sha, DANA, "database-platform") is None


def test_a_resume_makes_the_hold_packet_stale() -> None:
    h, sha = on_hold_with_packet()
    h.resume(actor=ALICE)
    assert accept(h, sha, DANA, "database-platform") is RefusalReason.STALE_BASE


def test_wrong_hash_and_no_packet() -> None:
    h = History().open().declare()
    h.request_takeover()
    assert accept(h, "a" * 64, DANA, "database-platform") is RefusalReason.INVALID_BASE
    h.packet("a" * 64)
    assert accept(h, "b" * 64, DANA, "database-platform") is RefusalReason.STALE_BASE


def test_the_fold_ignores_an_unentitled_acceptance() -> None:
    h, sha = on_hold_with_packet()
    h.request_takeover("database-platform")
    h.take_over(sha, ROB, team="rollback-authority")
    state = fold(h.events, h.incident_id)
    assert state.holder is not None and state.holder.identity == "alice"
    assert state.ignored_controls == 1
