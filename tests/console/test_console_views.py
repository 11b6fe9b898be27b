"""Pure tests of the console (no I/O): the read adapter over a fold of real events, which
controls a person is shown, escaping in every template, and the small helpers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from console_support import APPROVAL_RULE
from markupsafe import escape
from unit.builders import ALICE, RUNBOOK, T0, VERIFIER, History

from conn_api.auth import Identity
from conn_api.console.adapter import (
    BridgeReader,
    Controls,
    PacketPage,
    PacketRefView,
    packet_freshness,
)
from conn_api.console.render import Renderer, spark
from conn_api.console.web import _safe_next
from conn_api.view import LedgerEntry
from conn_core import approvals as core
from conn_core.authority import parse_authority
from conn_core.chain import GENESIS, link
from conn_core.fold import evolve, evolve_control
from conn_core.rules import check_control
from conn_core.state import ControlState, IncidentState
from conn_runtime.kafka import Position
from conn_schemas import events as ev
from conn_schemas.approvals import ApprovalDeclinedPayload, ApprovalRecordedPayload
from conn_schemas.observations import MetricsReading
from conn_schemas.values import (
    Action,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    RefusalReason,
    Role,
    Verdict,
)

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> **b** [l](javascript:x) {{7*7}}"

ALICE_ID = Identity("alice", (Role.COMMANDER,), "incident-command")
DANA_ID = Identity("dana", (Role.SPECIALIST,), "database-platform")
ROB_ID = Identity("rob", (Role.SPECIALIST,), "rollback-authority")
OLIVE_ID = Identity("olive", (Role.OBSERVER,))
ROOT_ID = Identity("root", (Role.ADMIN,))
BOT_ID = Identity("alertbot", (Role.INTEGRATION,), kind="service")
FLAG = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")


class FoldedView:
    """The API's LogView reduced to what the adapter reads, fed by the real fold."""

    def __init__(self) -> None:
        self.folds = SimpleNamespace(states={}, control=ControlState())
        self.ledgers: dict[str, list[LedgerEntry]] = {}

    def feed(self, *events: ev.Envelope) -> FoldedView:
        for event in events:
            if event.incident_id == ev.GLOBAL_INCIDENT:
                evolve_control(self.folds.control, event)
                continue
            state = self.folds.states.setdefault(
                event.incident_id, IncidentState(incident_id=event.incident_id)
            )
            evolve(state, event)
            ledger = self.ledgers.setdefault(event.incident_id, [])
            prev = ledger[-1].hash if ledger else GENESIS
            pos = Position("t.conn.events", 0, len(ledger))
            ledger.append(LedgerEntry(state.sequence, link(prev, event), pos, event))
        return self

    def state(self, incident_id: str) -> IncidentState:
        return self.folds.states.get(incident_id) or IncidentState(incident_id=incident_id)

    def ledger(self, incident_id: str) -> list[LedgerEntry]:
        return self.ledgers.get(incident_id, [])


def reader(view: FoldedView) -> BridgeReader:
    return BridgeReader(SimpleNamespace(view=view, read_model=None))  # type: ignore[arg-type]


def incident_html(page: Any, who: Identity) -> str:
    """The whole incident page as `who` is served it."""
    return Renderer().render(
        "incident.html", flash=None, now=page.now, page=page, me=who, csrf="t", ks=page.kill_switch
    )


def approvals_html(page: Any, who: Identity) -> str:
    """The approvals panel as `who` is served it."""
    return Renderer().render(
        "panels/approvals.html", page=page, me=who, csrf="t", ks=page.kill_switch
    )


def started(h: History, action: Action = FLAG) -> str:
    """A directive of `action` issued, accepted and started: its correlation id."""
    cid = h.direct(action)
    h.accept(cid, action)
    h.start(cid, action)
    return cid


def failed(h: History, error: str, action: Action = FLAG) -> str:
    """A step of `action` that started and failed with `error`: its correlation id."""
    cid = started(h, action)
    h._add(
        ev.StepFailed,
        ev.StepFailedPayload(action=action, error=error, summary="failed", duration_ms=5),
        VERIFIER,
        cid,
    )
    return cid


def hostile_history() -> History:
    """Every free-text field a page shows, typed by someone hostile: the title, an
    alert's summary and label, a refusal's detail, a step's error, an approval note,
    hold and handoff notes."""
    h = History("inc-hostile")
    h._add(
        ev.IncidentOpened,
        ev.IncidentOpenedPayload(title=HOSTILE, service="checkout", severity="sev1"),
        ALICE,
    )
    h.declare(content=RUNBOOK.read_bytes() + APPROVAL_RULE.encode())
    h._add(
        ev.AlertReceived,
        ev.AlertReceivedPayload(
            source="alertmanager",
            fingerprint="f1",
            service="checkout",
            summary=HOSTILE,
            labels={"note": HOSTILE},
        ),
        Actor.service("alertbot"),
    )
    refused = h.direct(FLAG)
    h.refuse(refused, FLAG, RefusalReason.STEP_UNVERIFIED, detail=HOSTILE)
    failed(h, HOSTILE)
    guarded = h.direct(GUARDED)
    state = FoldedView().feed(*h.events).state("inc-hostile")
    (waiting,) = core.pending(state, T0)
    _vote(h, guarded, waiting.packet_sha256, ev_actor("root"), note=HOSTILE)
    h._add(ev.HoldDeclared, ev.HoldDeclaredPayload(detail=HOSTILE), ALICE)
    h._add(
        ev.TakeoverRequested,
        ev.TakeoverRequestedPayload(to_team="database-platform", detail=HOSTILE),
        ALICE,
    )
    h.packet(team="database-platform")
    return h


def _no_markup_from_data(html: str) -> None:
    assert "<script>alert" not in html
    assert "<img" not in html
    assert "javascript:" not in html.replace("javascript:x", "")  # only ever as escaped text
    assert 'href="javascript' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Data is never evaluated as a template: the text arrives verbatim (escaped), and
    # its evaluated form (where "{{7*7}}" became "49") is nowhere. Not a bare "49",
    # which a timestamp or a hash may contain.
    assert str(escape(HOSTILE)) in html
    evaluated = escape(HOSTILE).replace("{{7*7}}", "49")
    assert evaluated not in html and "javascript:x) 49" not in html


def test_every_template_escapes_what_people_typed() -> None:
    view = FoldedView().feed(*hostile_history().events)
    r = reader(view)
    render = Renderer()
    page = r.incident(DANA_ID, "inc-hostile", now=T0)
    assert page.row.title == HOSTILE
    assert [x.detail for x in page.refusals] == [HOSTILE]
    (approval,) = page.approvals
    assert approval.votes == (f"root approved: {HOSTILE}",)
    for kind in ("AlertReceived", "DirectiveRefused", "StepFailed", "ApprovalRecorded"):
        assert any(HOSTILE in row.summary for row in page.ledger if row.event_type == kind), kind
    _no_markup_from_data(incident_html(page, DANA_ID))
    for row in page.ledger:
        render.render("panels/ledger_row.html", row=row)
    html = render.render(
        "incidents.html",
        me=OLIVE_ID,
        csrf="t",
        flash={"ok": False, "status": 403, "code": "x", "message": HOSTILE},
        now=page.now,
        rows=r.incidents(),
        fleet=r.fleet_summary(),
        filter="all",
        filters=(("all", "All"),),
        ks=page.kill_switch,
        me_controls=Controls(),
        back="/console/",
    )
    _no_markup_from_data(html)
    packet = PacketPage(
        incident_id="inc-hostile",
        title=HOSTILE,
        ref=PacketRefView("a" * 64, "database-platform", "handoff", 5),
        packet=None,
        content_matches=None,
        markdown=f"# Takeover: {HOSTILE}\n",
        ledger_sequence=4,
        ledger_hash="0" * 64,
        source="ledger",
        controls=Controls(),
        kill_switch=page.kill_switch,
    )
    html = render.render(
        "packet.html",
        me=DANA_ID,
        csrf="t",
        flash=None,
        now=page.now,
        page=packet,
        ks=page.kill_switch,
        freshness="current",
        incident_id="inc-hostile",
    )
    _no_markup_from_data(html)
    assert "# Takeover: &lt;script&gt;" in html


def test_controls_follow_role_and_the_core_rules() -> None:
    h = History("inc-c").open().declare()
    view = FoldedView().feed(*h.events)
    r = reader(view)

    def controls(who: Identity) -> Controls:
        return r.incident(who, "inc-c").controls

    assert controls(OLIVE_ID) == Controls() and not Controls().any
    assert controls(BOT_ID) == Controls()
    alice = controls(ALICE_ID)
    assert alice.hold and not alice.resume and alice.accept is None and alice.kill_switch is None
    assert alice.handoff_teams == ("database-platform", "rollback-authority")
    dana = controls(DANA_ID)  # a specialist may stop, not steer
    assert dana.hold and not dana.resume and dana.handoff_teams == () and dana.accept is None
    assert controls(ROOT_ID).kill_switch == "engage"

    h.hold()
    h.request_takeover("database-platform")
    sha = h.packet(team="database-platform")
    view = FoldedView().feed(*h.events)
    r = reader(view)
    alice = r.incident(ALICE_ID, "inc-c").controls
    assert alice.resume and not alice.hold
    dana = r.incident(DANA_ID, "inc-c").controls
    assert (
        dana.accept is not None
        and dana.accept.sha256 == sha
        and dana.accept_team == "database-platform"
    )
    assert r.incident(ROB_ID, "inc-c").controls.accept is None  # not the addressed team
    assert r.incident(OLIVE_ID, "inc-c").controls == Controls()

    h.take_over(sha)
    view = FoldedView().feed(*h.events, h.kill_switch(engaged=True))
    r = reader(view)
    assert r.incident(DANA_ID, "inc-c").controls.accept is None  # already accepted
    assert r.incident(ALICE_ID, "inc-c").controls.handoff_teams == ()  # no longer the holder
    assert r.incident(ROOT_ID, "inc-c").controls.kill_switch == "release"
    assert r.incident(OLIVE_ID, "inc-c").kill_switch.engaged

    h.close()
    view = FoldedView().feed(*h.events)
    closed = reader(view).incident(ALICE_ID, "inc-c")
    assert closed.controls == Controls(kill_switch=None) and closed.row.status == "closed"


def test_the_packet_page_says_current_due_or_superseded_as_the_api_decides() -> None:
    """Invariant 9 on the page: "current" only while accepting that hash can succeed.
    The oracle is the core's own acceptance rule (`check_control` on the TakeoverAccepted
    the addressed team would send), not the adapter."""

    def accepting(state: IncidentState, sha: str) -> bool:
        accept = ev.new_event(
            ev.TakeoverAccepted,
            incident_id=state.incident_id,
            payload=ev.TakeoverAcceptedPayload(team="database-platform", packet_sha256=sha),
            actor=DANA_ID.actor(),
            producer="directive-api",
        )
        return check_control(state, accept) is None

    def freshness(h: History, sha: str) -> tuple[str, bool]:
        view = FoldedView().feed(*h.events)
        return packet_freshness(view.state(h.incident_id), sha), accepting(
            view.state(h.incident_id), sha
        )

    h = History("inc-p").open().declare()
    h.hold()
    h.request_takeover("database-platform")
    first = h.packet("a" * 64, team="database-platform")
    assert freshness(h, first) == ("current", True)
    # The incident changes after the packet (a directive now blocked by the hold): a
    # newer packet is due; the page must not call this one current.
    h.direct(FLAG)
    assert freshness(h, first) == ("due", False)
    second = h.packet("b" * 64, team="database-platform")
    assert freshness(h, second) == ("current", True)
    assert freshness(h, first) == ("superseded", False)

    render = Renderer()
    for state, words in (
        ("current", "Current"),
        ("due", "a newer one is due"),
        ("superseded", "Superseded"),
    ):
        html = render.render("panels/packet_current.html", freshness=state, incident_id="inc-p")
        assert words in html


def test_open_authority_proposals_are_shown_and_never_as_in_force() -> None:
    wide = RUNBOOK.read_bytes().replace(
        b"max_consequential_steps: 10", b"max_consequential_steps: 30"
    )
    h = History("inc-w").open().declare()
    in_force = FoldedView().feed(*h.events).state("inc-w").authority_sha256
    sha = h.propose(wide)
    view = FoldedView().feed(*h.events)
    page = reader(view).incident(OLIVE_ID, "inc-w")
    assert page.authority is not None and page.authority.sha256 == in_force != sha
    (proposal,) = page.authority.proposals
    assert (proposal.sha256, proposal.proposed_by, proposal.approved_by) == (sha, "alice", None)
    kinds = {row.event_type: row.summary for row in page.ledger}
    assert "not in force" in kinds["AuthorityChangeProposed"]
    html = Renderer().render("panels/authority.html", page=page)
    assert "Proposed, not in force" in html and sha in html
    h.approve("p-1", sha, ev_actor("root"))
    h.declare(content=wide, actor=ev_actor("root"), approval="p-1")
    view = FoldedView().feed(*h.events)
    page = reader(view).incident(OLIVE_ID, "inc-w")
    assert page.authority is not None and page.authority.sha256 == parse_authority(wide)[1]
    assert page.authority.proposals == (), "applied: in force, no longer a proposal"
    assert (
        "approved proposal p-1"
        in {r.event_type: r.summary for r in page.ledger}["AuthorityChangeApproved"]
    )


def ev_actor(who: str) -> Actor:
    return Actor(kind="human", id=who, roles=(Role.ADMIN,))


def test_the_incident_page_reads_the_fold() -> None:
    h = History("inc-r").open().declare()
    cid = started(h)
    h.succeed(cid, FLAG)
    h.snapshot(cid, Verdict.MIXED, regions=("us-east", "eu-west"))
    other = h.direct(FLAG)
    h.refuse(other, FLAG, RefusalReason.STEP_UNVERIFIED, detail="previous step unverified")
    view = FoldedView().feed(*h.events)
    page = reader(view).incident(OLIVE_ID, "inc-r", now=datetime(2026, 11, 22, 9, 1, tzinfo=UTC))
    assert page.opened and page.row.severity == "sev2" and page.row.last_verdict == "mixed"
    assert page.current_step is not None and page.current_step.correlation_id == cid
    assert page.current_step.verdict == "mixed"
    assert page.authority is not None and page.authority.name == "checkout-outage"
    assert page.authority.sha256 == view.state("inc-r").authority_sha256
    assert [(x.reason, x.detail) for x in page.refusals] == [
        (RefusalReason.STEP_UNVERIFIED.value, "previous step unverified")
    ]
    regions = {x.region: x for x in page.regions}
    assert set(regions) == {"us-east", "eu-west"}
    assert regions["eu-west"].label.text in ("Healthy", "Unhealthy")
    assert all(len(x.error_series) == 1 and x.age_seconds is not None for x in regions.values())
    assert [row.sequence for row in page.ledger] == list(range(1, len(h.events) + 1))
    assert page.head_hash == view.ledger("inc-r")[-1].hash
    unopened = reader(view).incident(OLIVE_ID, "inc-nope")
    assert not unopened.opened and unopened.ledger == () and unopened.controls == Controls()


def test_a_snapshot_with_no_data_readings_renders_as_no_data() -> None:
    """A reading the source could not give is None (no data is never health): the ledger
    line says n/a, the sparkline leaves the point out, the page renders (no 500)."""
    h = History("inc-nodata").open().declare()
    action = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="us-east")
    cid = started(h, action)
    h.succeed(cid, action)
    h.snapshot(cid, Verdict.MIXED)
    at = T0 + timedelta(minutes=5)
    blank = MetricsReading(
        region="us-east", error_rate=None, queue_depth=None, request_rate=None, observed_at=at
    )
    h._add(
        ev.VerificationSnapshot,
        ev.VerificationSnapshotPayload(
            trigger="step",
            step_correlation_id=cid,
            regions=(
                ev.RegionReadings(
                    region="us-east",
                    readings=(blank,),
                    ages_seconds=(0.0,),
                    healthy=False,
                    fresh=True,
                ),
            ),
            criteria=ev.VerificationCriteria(),
            verdict=Verdict.NOT_RECOVERED,
            detail="no data",
            window_started_at=at,
            window_ended_at=at,
        ),
        VERIFIER,
        cid,
    )
    page = reader(FoldedView().feed(*h.events)).incident(
        OLIVE_ID, "inc-nodata", now=at + timedelta(seconds=1)
    )
    last = page.ledger[-1]
    assert last.event_type == "VerificationSnapshot"
    assert "errors n/a, queue n/a" in last.summary
    region = next(x for x in page.regions if x.region == "us-east")
    assert region.error_series == (0.0,) and region.queue_series == (1.0,)
    assert "errors n/a, queue n/a" in incident_html(page, OLIVE_ID)


def test_sparklines_are_numbers_only() -> None:
    assert spark([]) is None
    one = spark([0.5])
    assert one is not None and one.count == 1 and re.fullmatch(r"[0-9., ]+", one.points)
    many = spark([0.1, 0.3, 0.2, 0.0])
    assert many is not None and many.high == 0.3 and many.low == 0.0
    assert len(many.points.split()) == 4 and re.fullmatch(r"[0-9., ]+", many.points)
    flat = spark([7.0, 7.0])
    assert flat is not None and re.fullmatch(r"[0-9., ]+", flat.points)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/console/incidents/inc-1", "/console/incidents/inc-1"),
        ("/console/?filter=held", "/console/?filter=held"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/\\evil", "/console/"),
        ("/console/\nSet-Cookie: x", "/console/"),
        ("/v1/incidents", "/console/"),
        ("", "/console/"),
    ],
)
def test_sign_in_returns_only_to_console_paths(given: str, expected: str) -> None:
    assert _safe_next(given) == expected


async def test_an_unreachable_session_store_is_a_503_not_a_stack_trace() -> None:
    from conn_api.console.sessions import SessionStore, StoreUnavailable

    class DownPool:
        def acquire(self) -> Any:
            raise OSError("connection refused")

        async def fetchrow(self, *_: Any) -> Any:
            raise OSError("connection refused")

    store = SessionStore(lifetime_seconds=60)
    store._ready = True
    with pytest.raises(StoreUnavailable):
        await store.get(DownPool(), "x" * 43, None)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await store.create(DownPool(), ALICE_ID, token="t")  # type: ignore[arg-type]


def test_the_incident_list_shows_the_fleet_summary() -> None:
    """The same figures as GET /v1/fleet/report's totals (conn_core.fleet), live."""
    drain = DrainWorkerPool(pool="checkout-workers", region="eu-west")
    h = History("inc-fleet")
    h.open().declare()
    cid = started(h, drain)
    h.succeed(cid, drain)
    h.snapshot(cid, Verdict.RECOVERED)
    h.close()
    r = reader(FoldedView().feed(*h.events))
    rows = dict(r.fleet_summary())
    assert rows["Safe completion"] == "100.0% (1/1)"
    assert rows["Trace completeness"] == "100.0% (1/1)"
    assert rows["Unauthorized side effects"] == "0"
    html = Renderer().render("panels/fleet_summary.html", fleet=r.fleet_summary())
    assert "<dt>Safe completion</dt><dd>100.0% (1/1)</dd>" in html
    # a new record changes the summary (it is not cached past a change)
    view = FoldedView().feed(*h.events[:-1])
    assert dict(reader(view).fleet_summary())["Safe completion"] == "n/a (0/0)"


GUARDED = DrainWorkerPool(pool="cache-invalidation", region="us-east")


def _waiting_for_approval(incident_id: str) -> tuple[History, str]:
    h = History(incident_id).open().declare(content=RUNBOOK.read_bytes() + APPROVAL_RULE.encode())
    return h, h.direct(GUARDED)


def _vote(
    h: History, cid: str, sha: str, actor: Actor, *, decline: str = "", note: str = ""
) -> None:
    if decline:
        h._add(
            ev.ApprovalDeclined,
            ApprovalDeclinedPayload(packet_sha256=sha, reason=decline),
            actor,
            cid,
        )
    else:
        h._add(
            ev.ApprovalRecorded, ApprovalRecordedPayload(packet_sha256=sha, detail=note), actor, cid
        )


def test_entitled_approvers_get_approve_and_decline_naming_the_packet_hash() -> None:
    """The approvals panel offers approve/decline to exactly those the core's check_vote
    would let vote now (the oracle is check_vote on the vote each would send, not the
    adapter), each form naming the decision packet's sha256 the API lists."""
    h, cid = _waiting_for_approval("inc-a")
    at = T0 + timedelta(seconds=30)
    view = FoldedView().feed(*h.events)
    state = view.state("inc-a")
    (listed,) = core.pending(state, at)
    r = reader(view)

    def item(who: Identity) -> Any:
        (one,) = r.incident(who, "inc-a", now=at).approvals
        return one

    def core_allows(who: Identity) -> bool:
        vote = ev.new_event(
            ev.ApprovalRecorded,
            incident_id="inc-a",
            payload=ApprovalRecordedPayload(packet_sha256=listed.packet_sha256),
            actor=who.actor(),
            producer="directive-api",
            correlation_id=cid,
            clock=lambda: at,
        )
        return core.check_vote(state, vote) is None

    for who in (ALICE_ID, DANA_ID, ROB_ID, OLIVE_ID, ROOT_ID, BOT_ID):
        shown = item(who)
        assert shown.packet_sha256 == listed.packet_sha256 and shown.correlation_id == cid
        assert shown.may_approve == (core_allows(who) and who.kind == "human"), who.id
    assert item(DANA_ID).may_approve and item(ROOT_ID).may_approve
    assert not item(ALICE_ID).may_approve, "the issuer never approves their own step"
    assert not any((item(w).may_approve or item(w).may_decline) for w in (OLIVE_ID, BOT_ID))
    assert item(DANA_ID).may_decline and not item(OLIVE_ID).may_decline

    html = approvals_html(r.incident(DANA_ID, "inc-a", now=at), DANA_ID)
    assert html.count(f'name="packet_sha256" value="{listed.packet_sha256}"') == 2
    assert 'data-control="approve"' in html and 'data-control="decline"' in html
    assert f"/console/incidents/inc-a/approvals/{cid}" in html
    # The whole packet is on the page, and it is the one the hash names.
    from conn_core.chain import sha256_json

    shown_packet = item(DANA_ID).packet_json
    assert sha256_json(json.loads(shown_packet)) == listed.packet_sha256
    assert str(escape(shown_packet)) in html
    html = approvals_html(r.incident(OLIVE_ID, "inc-a", now=at), OLIVE_ID)
    assert listed.packet_sha256 in html and "<form" not in html

    # Once the quorum is in, nobody is offered to approve again; after expiry neither.
    _vote(h, cid, listed.packet_sha256, DANA_ID.actor(), note="ok")
    r = reader(FoldedView().feed(*h.events))
    assert not item(ROOT_ID).may_approve and item(ROOT_ID).status == "approved"
    h2, _ = _waiting_for_approval("inc-a")
    r = reader(FoldedView().feed(*h2.events))
    late = r.incident(DANA_ID, "inc-a", now=T0 + timedelta(hours=1)).approvals
    assert all(not (x.may_approve or x.may_decline) for x in late)


SECRET = "password=hunter2 on db-7.internal:5432 via https://ops.example.com/x"


def test_observers_read_free_texts_scrubbed_as_the_api_shows_them() -> None:
    """Invariant 10 on the console: errors, refusal details, hold notes reach an observer
    scrubbed (the API's conn_api.disclosure rule), on the page and on the live stream's
    rows; the roles that act on them read them whole."""
    from conn_api.disclosure import redacted

    h = History("inc-s").open().declare()
    failed(h, SECRET)
    other = h.direct(FLAG)
    h.refuse(other, FLAG, RefusalReason.STEP_UNVERIFIED, detail=SECRET)
    h._add(ev.HoldDeclared, ev.HoldDeclaredPayload(detail=SECRET), ALICE)
    view = FoldedView().feed(*h.events)
    r = reader(view)
    scrubbed = redacted({"detail": SECRET})["detail"]
    assert "hunter2" not in scrubbed  # the oracle: what GET .../ledger gives an observer

    def rendered(who: Identity) -> str:
        html = incident_html(r.incident(who, "inc-s"), who)
        for row in r.rows_after(who, "inc-s", 0):
            html += Renderer().render("panels/ledger_row.html", row=row)
        return html

    for secret_part in ("hunter2", "db-7.internal", "ops.example.com"):
        assert secret_part not in rendered(OLIVE_ID), secret_part
        assert secret_part in rendered(DANA_ID), secret_part
    observer = r.incident(OLIVE_ID, "inc-s")
    assert [x.detail for x in observer.refusals] == [scrubbed]
    assert observer.hold is not None and observer.hold.detail == scrubbed
    assert all("hunter2" not in row.summary for row in r.rows_after(OLIVE_ID, "inc-s", 0))
    assert any(SECRET in row.summary for row in r.rows_after(ALICE_ID, "inc-s", 0))


def test_every_console_post_is_in_the_csrf_test() -> None:
    """A new POST route must be added to the HTTP test that posts it cross-site."""
    from test_console_http import CONTROL_POSTS

    from conn_api.console.web import Console

    posts = {
        getattr(route, "path", "")
        for route in Console().router.routes
        if "POST" in getattr(route, "methods", set())
    }
    expected = {
        p.replace("{incident}", "{incident_id}").replace("{correlation}", "{correlation_id}")
        for p in CONTROL_POSTS
    }
    assert posts - {"/console/login"} == expected


def test_the_incident_list_filters_open_held_and_handed_off_with_severity_holder_verdict() -> None:
    from conn_api.console.web import Console

    plain = History("inc-open").open().declare()
    cid = plain.direct(FLAG)
    plain.snapshot(cid, Verdict.RECOVERED)
    held = History("inc-held").open().declare()
    held.hold()
    handed = History("inc-handed").open().declare()
    handed.request_takeover("database-platform")
    handed.take_over(handed.packet(team="database-platform"))
    closed = History("inc-closed").open().declare()
    closed.close()
    view = FoldedView().feed(*plain.events, *held.events, *handed.events, *closed.events)
    r = reader(view)
    console = Console()

    def ids(flt: str) -> set[str]:
        return {row.incident_id for row in console._incident_rows(r, flt)}

    assert ids("active") == {"inc-open", "inc-held", "inc-handed"}
    assert ids("open") == {"inc-open", "inc-handed"}
    assert ids("held") == {"inc-held"}
    assert ids("handed-off") == {"inc-handed"}
    assert ids("closed") == {"inc-closed"}
    assert ids("all") == {"inc-open", "inc-held", "inc-handed", "inc-closed"}
    rows = {row.incident_id: row for row in r.incidents()}
    assert (rows["inc-open"].severity, rows["inc-open"].holder) == ("sev2", "alice")
    assert rows["inc-open"].last_verdict == "recovered"
    assert (rows["inc-handed"].holder, rows["inc-handed"].holder_team) == (
        "dana",
        "database-platform",
    )
    html = Renderer().render("panels/incident_rows.html", rows=r.incidents())
    for words in ("On hold (manual)", "Handed off to database-platform", "Closed", "sev2"):
        assert words in html, words
    assert '<span class="badge verdict-recovered">recovered</span>' in html
