"""Signed incident histories for the read-model batching tests (pure: builds records, no
I/O): several incidents interleaved on a partitioned topic, with steps, verdicts that
hold, holds, resumes, handoffs, published packets (the real ones, and ones naming no
packet), takeovers, authority changes with approvals, directive approvals, refusals,
unknown outcomes, restarts (the restart_dependency_tier action), closes, and records
that must be refused (bad signature, unreadable bytes). Also the bench generator's
57-event incident (bench/gen.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from hypothesis import strategies as st
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Keys, restamp
from unit.builders import CAROL, DANA, ROOT_ADMIN, RUNBOOK, History

from conn_readmodel.projection import IncidentProjection, Where, project
from conn_readmodel.replay import ReplayResult
from conn_runtime.partitioning import partition_for
from conn_runtime.settings import Topics
from conn_runtime.trust import RawRecord, Trust
from conn_schemas import events as ev
from conn_schemas.codec import encode
from conn_schemas.values import (
    GatherState,
    RefusalReason,
    RestartDependencyTier,
    Verdict,
)

KEYS = Keys.fresh()
TOPICS = Topics()
PARTITIONS = 3
RESTART = RestartDependencyTier(tier="pricing-cache", region="us-east")
GATHER = GatherState(regions=("us-east",))
WIDER = RUNBOOK.read_bytes().replace(b"max_consequential_steps: 10", b"max_consequential_steps: 12")

OPS = (
    "step",
    "step",
    "mixed",
    "failed_verdict",
    "unknown",
    "refuse",
    "gather",
    "note",
    "hold",
    "resume",
    "handoff",
    "publish",
    "publish_unknown",
    "take_over",
    "authority_change",
    "approval",
    "close",
    "forged",
    "unreadable",
)


Rec = RawRecord
"""A consumed record as the runtime takes it from faust or a test."""


def trust() -> Trust:
    return Trust(KEYS.keyring, TOPICS)


@dataclass
class Item:
    """One record to be: a genuine event (signed by its rightful producer), or a
    record to refuse."""

    event: ev.Envelope
    spoil: str | None = None


def incident_items(incident_id: str, ops: list[str]) -> list[Item]:
    """The incident's records for `ops` (a packet is published with the hash and
    position of the packet the projection made due, as the packager does)."""
    h = History(incident_id).open()
    h.declare()
    items = [Item(e) for e in h.events]
    shadow = IncidentProjection.new(incident_id)
    last_packet: tuple[int, str] | None = None
    proposals = 0

    def sync() -> None:
        """Fold the new genuine events; note the packet they made due."""
        nonlocal last_packet
        for e in h.events[shadow.state.sequence :]:
            rows = project(shadow, stamped(e), Where("t", 0, 0))
            if rows.packet is not None:
                last_packet = (rows.sequence, rows.packet.sha256)

    for op in ops:
        sync()
        before = len(h.events)
        if op in ("step", "mixed", "failed_verdict"):
            cid = h.direct(RESTART)
            h.accept(cid, RESTART)
            h.start(cid, RESTART)
            h.succeed(cid, RESTART)
            verdict = {
                "step": Verdict.RECOVERED,
                "mixed": Verdict.MIXED,
                "failed_verdict": Verdict.NOT_RECOVERED,
            }[op]
            h.snapshot(cid, verdict)
        elif op == "unknown":
            cid = h.direct(RESTART)
            h.accept(cid, RESTART)
            h.start(cid, RESTART)
            h.unknown(cid, RESTART)
        elif op == "refuse":
            cid = h.direct(RESTART)
            h.refuse(cid, RESTART, RefusalReason.ON_HOLD)
        elif op == "gather":
            cid = h.direct(GATHER)
            h.accept(cid, GATHER, consequential=False)
            h.gather(cid, purpose="directed")
        elif op == "note":
            h.note()
        elif op == "hold":
            h.hold()
        elif op == "resume":
            h.resume()
        elif op == "handoff":
            h.request_takeover()
        elif op == "publish" and last_packet is not None:
            h.packet(last_packet[1], basis=last_packet[0])
        elif op == "publish_unknown":
            h.packet("c" * 64, basis=h.position)
        elif op == "take_over" and last_packet is not None:
            h.take_over(last_packet[1])
        elif op == "authority_change":
            proposals += 1
            pid = f"p-{proposals}"
            sha = h.propose(WIDER, proposal_id=pid)
            h.approve(pid, sha, ROOT_ADMIN)
            h.declare(content=WIDER, actor=ROOT_ADMIN, approval=pid)
        elif op == "approval":
            cid = h.direct(RESTART, actor=DANA)
            h._add(
                ev.ApprovalRecorded, ev.ApprovalRecordedPayload(packet_sha256="b" * 64), CAROL, cid
            )
        elif op == "close":
            h.close()
        elif op in ("forged", "unreadable"):
            h.note()
            items.append(Item(h.events.pop(), spoil=op))  # refused: never folded
            continue
        items.extend(Item(e) for e in h.events[before:])
    return items


def records(incidents: list[list[Item]], interleave: list[int]) -> list[Rec]:
    """The incidents' items as records of one topic, interleaved as `interleave` says
    (each incident's order kept; offsets per partition in log order)."""
    queues = [list(items) for items in incidents]
    offsets: dict[int, int] = {}
    out: list[Rec] = []
    picks = iter(interleave)
    while any(queues):
        live = [q for q in queues if q]
        queue = live[next(picks, 0) % len(live)]
        item = queue.pop(0)
        partition = partition_for(item.event.incident_id, PARTITIONS)
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        out.append(signed(item, partition, offset))
    return out


def stamped(event: ev.Envelope) -> ev.Envelope:
    """`event` as its rightful producer writes it (what is signed, folded and hashed)."""
    role = OWNER[event.event_type]
    return restamp(event, PRINCIPAL_OF_ROLE[role], role)


def signed(item: Item, partition: int, offset: int) -> Rec:
    who = PRINCIPAL_OF_ROLE[OWNER[item.event.event_type]]
    event = stamped(item.event)
    value = encode(event)
    headers = KEYS.headers(value, who)
    if item.spoil == "forged":
        headers = KEYS.headers(value.replace(b'"note"', b'"edited"'), who)
    elif item.spoil == "unreadable":
        value = b"{not json"
        headers = KEYS.headers(value, who)
    return Rec(TOPICS.events, partition, offset, event.incident_id.encode(), value, headers)


@st.composite
def histories(draw: st.DrawFn, max_incidents: int = 3, max_ops: int = 12) -> list[Rec]:
    """Records of 1..`max_incidents` interleaved incidents of up to `max_ops` operations."""
    n = draw(st.integers(1, max_incidents))
    incidents = [
        incident_items(f"inc-b{k}", draw(st.lists(st.sampled_from(OPS), max_size=max_ops)))
        for k in range(n)
    ]
    total = sum(len(i) for i in incidents)
    interleave = draw(st.lists(st.integers(0, n - 1), min_size=total, max_size=total))
    return records(incidents, interleave)


def bench_incidents(count: int) -> list[Rec]:
    """`count` incidents of the bench generator (bench/gen.py), as they are produced."""
    from bench import gen

    template = gen.template_events()
    items: list[list[Item]] = []
    for k in range(count):
        clone = [
            e.model_copy(update={"incident_id": f"bench-{k}", "event_id": uuid4()})
            for e in template
        ]
        items.append([Item(e) for e in clone])
    return records(items, list(range(sum(len(i) for i in items))))


def chunks(recs: list[Rec], cuts: list[int]) -> list[list[Rec]]:
    """`recs` cut at the positions in `cuts` (sorted, deduplicated, within bounds)."""
    points = sorted({c for c in cuts if 0 < c < len(recs)})
    out = []
    start = 0
    for p in [*points, len(recs)]:
        out.append(recs[start:p])
        start = p
    return [c for c in out if c]


def replay_outcome(result: ReplayResult) -> tuple[Any, ...]:
    """What a rebuild reports, without the schema it rebuilt into: two rebuilds of the
    same records must report the same."""
    return (
        result.records,
        result.events,
        result.unreadable,
        result.misplaced,
        result.problems,
        result.untrusted,
        dict(result.signed_by),
        result.keys_used,
    )
