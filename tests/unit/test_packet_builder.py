"""Pure takeover-packet builder and its Markdown (invariant 9)."""

from __future__ import annotations

from packager.packager_scenario import mixed_state, recovered

from conn_core.chain import GENESIS, link
from conn_core.fold import fold
from conn_readmodel.packet import build_packet, packet_sha256, render_markdown
from conn_readmodel.projection import IncidentProjection, Where, project


def _packets(events):  # type: ignore[no-untyped-def]
    proj = IncidentProjection.new(events[0].incident_id)
    out = []
    for i, e in enumerate(events):
        rows = project(proj, e, Where("t", 0, i))
        if rows.packet is not None:
            out.append(rows.packet)
    return out


def test_mixed_state_packet_holds_every_item_of_invariant_9() -> None:
    script = mixed_state()
    packets = _packets(script.events)
    assert len(packets) == 1
    p = packets[0].packet
    head = GENESIS
    for e in script.events:
        head = link(head, e)
    assert (p.ledger_head.sequence, p.ledger_head.hash) == (len(script.events), head)
    assert p.trigger == "hold" and p.hold is not None and p.hold.reason.value == "verification"
    assert p.last_step is not None and p.last_step.correlation_id == "c-drain"
    assert p.last_step.status == "succeeded"
    assert p.last_step.description == "drain_worker_pool cache-invalidation in us-east"
    ages = {r.region: (r.age_seconds, r.healthy) for r in p.regions}
    assert ages == {"us-east": (7.0, True), "eu-west": (7.0, False)}
    assert [d.correlation_id for d in p.pending_directives] == ["c-note"]
    assert [d.correlation_id for d in p.blocked_directives] == ["c-restart"]
    assert p.blocked_directives[0].refusal is not None
    assert [(d.target, d.regions) for d in p.partial_changes] == [
        ("cache-invalidation", ("us-east",))
    ]
    assert p.authority is not None and p.authority.holder == "alice"
    assert p.authority.sha256 == script.events[1].payload.content_sha256  # type: ignore[attr-defined]
    assert p.authority.version == "2026-11-22.1"
    assert p.title == "Checkout failing in two regions"


def test_packet_is_deterministic_and_hash_covers_content() -> None:
    events = mixed_state().events
    state = fold(events, "inc-mixed")
    at = events[-1].occurred_at
    a = build_packet(state, head_hash="h", trigger="hold", to_team=None, generated_at=at)
    b = build_packet(state, head_hash="h", trigger="hold", to_team=None, generated_at=at)
    assert packet_sha256(a) == packet_sha256(b)
    c = build_packet(state, head_hash="h2", trigger="hold", to_team=None, generated_at=at)
    assert packet_sha256(c) != packet_sha256(a)


def test_no_packet_without_hold_or_handoff_and_one_for_handoff() -> None:
    assert _packets(recovered("inc-ok").events) == []
    handoff = _packets(recovered("inc-h", handoff=True).events)
    assert [(p.packet.trigger, p.packet.to_team) for p in handoff] == [
        ("handoff", "database-platform")
    ]
    assert handoff[0].packet.hold is None


def test_markdown_is_readable_and_names_everything() -> None:
    due = _packets(mixed_state().events)[0]
    md = render_markdown(due.packet, due.sha256)
    for needle in (
        "ON HOLD",
        "drain_worker_pool cache-invalidation in us-east",
        "**eu-west**: UNHEALTHY",
        "age 7s",
        "c-note",
        "c-restart",
        "checkout-outage @ 2026-11-22.1",
        due.sha256,
        due.packet.ledger_head.hash,
    ):
        assert needle in md
    assert max(len(line) for line in md.splitlines()) < 200
