"""DESIGN.md invariants 2 and 9: a step whose outcome is unknown (a timeout, a crash
between StepStarted and its outcome) is a possibly partial change, listed in the
takeover packet with its exact target until a verification says it recovered.

Found by the reverted-fix checks (docs/reverted-fixes.md, `unknown-not-in-packet`):
with OUTCOME_UNKNOWN left out of the packet's partial changes, only the adversary
failed; no example test did."""

from __future__ import annotations

from builders import History

from conn_core.fold import fold
from conn_readmodel.packet import build_packet
from conn_schemas import events as ev
from conn_schemas.values import DrainWorkerPool, Verdict

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")


def _partial(h: History) -> dict[str, str]:
    state = fold(h.events, h.incident_id)
    packet = build_packet(
        state, head_hash="0" * 64, trigger="hold", to_team=None, generated_at=ev.utcnow()
    )
    return {item.correlation_id: item.status for item in packet.partial_changes}


def test_an_unknown_outcome_is_a_partial_change_in_the_packet() -> None:
    h = History("inc-unknown-packet").open()
    h.declare()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.unknown(cid, DRAIN)
    assert cid in _partial(h)


def test_it_leaves_the_packet_once_verified_recovered() -> None:
    h = History("inc-unknown-verified").open()
    h.declare()
    cid = h.direct(DRAIN)
    h.accept(cid, DRAIN)
    h.start(cid, DRAIN)
    h.unknown(cid, DRAIN)
    h.snapshot(cid, Verdict.RECOVERED)
    assert cid not in _partial(h)
