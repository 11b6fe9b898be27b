"""The projector (conn_readmodel.projector), without I/O: records in, rows or refusals out.

Oracles from DESIGN.md: an incident's ledger is its events in log order, each entry
chained to the previous one (sequence n+1, prev_hash = hash of entry n, GENESIS first);
a record that is unreadable, unsigned, signed by a principal not entitled to its event
type, or not on its incident's partition takes no ledger position; a takeover packet is
due once the incident is on hold; rebuilding from the log and resuming mid-log from what
was already written give the same rows."""

from __future__ import annotations

from builders import History
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Keys, restamp

from conn_core.chain import GENESIS, link_raw
from conn_readmodel.projection import IncidentProjection
from conn_readmodel.projector import Projected, Projector, Refused
from conn_runtime.partitioning import WRONG_PARTITION, partition_for
from conn_runtime.settings import Topics
from conn_runtime.trust import RawRecord, Trust
from conn_schemas import events as ev
from conn_schemas.codec import encode
from conn_schemas.signing import SignerRole

KEYS = Keys.fresh()
TOPICS = Topics()
PARTITIONS = 6


Rec = RawRecord
"""A consumed record as the runtime takes it from faust or a test."""


def trust() -> Trust:
    return Trust(KEYS.keyring, TOPICS)


def signed(event: ev.Envelope, offset: int, *, principal: str | None = None, **kw: object) -> Rec:
    role = OWNER[event.event_type]
    who = principal or PRINCIPAL_OF_ROLE[role]
    event = restamp(event, who, role if principal is None else SignerRole.VERIFIER)
    value = encode(event)
    fields: dict[str, object] = {
        "topic": TOPICS.events,
        "partition": partition_for(event.incident_id, PARTITIONS),
        "offset": offset,
        "key": event.incident_id.encode(),
        "value": value,
        "headers": KEYS.headers(value, who),
    }
    fields.update(kw)
    return Rec(**fields)  # type: ignore[arg-type]


def history(incident_id: str = "inc-p") -> list[ev.Envelope]:
    h = History(incident_id).open()
    h.declare()
    h.hold()
    h.resume()
    return h.events


def test_every_trusted_record_extends_the_incidents_chain() -> None:
    events = history()
    projector = Projector(trust(), partitions=PARTITIONS)
    outcomes = [projector.apply(signed(e, i)) for i, e in enumerate(events)]
    assert all(isinstance(o, Projected) for o in outcomes)
    rows = [o.rows.ledger for o in outcomes if isinstance(o, Projected)]
    assert [r["sequence"] for r in rows] == list(range(1, len(events) + 1))
    prev = GENESIS
    for row in rows:
        assert row["prev_hash"] == prev
        assert row["hash"] == link_raw(prev, row["raw"])
        prev = row["hash"]
    last = outcomes[-1]
    assert isinstance(last, Projected)
    assert (last.sequence, last.head) == (len(events), prev)


def test_refused_records_take_no_ledger_position() -> None:
    events = history()
    projector = Projector(trust(), partitions=PARTITIONS)
    first = signed(events[0], 0)
    assert isinstance(projector.apply(first), Projected)
    unsigned = signed(events[1], 1, headers=[])
    junk = b"\x00not json"  # signed by an entitled principal, but no event
    garbage = Rec(
        TOPICS.events, first.partition, 2, first.key, junk, KEYS.headers(junk, "directive-api")
    )
    # the verifier may not sign what the API signs (DESIGN.md: per-role entitlement)
    unentitled = signed(events[1], 3, principal="verifier")
    wrong_partition = signed(events[1], 4, partition=(first.partition + 1) % PARTITIONS)
    refused = [projector.apply(r) for r in (unsigned, garbage, unentitled, wrong_partition)]
    assert [(r.kind if isinstance(r, Refused) else r) for r in refused] == [
        "untrusted",
        "unreadable",
        "untrusted",
        "misplaced",
    ]
    assert isinstance(refused[3], Refused) and refused[3].reason == WRONG_PARTITION
    after = projector.apply(signed(events[1], 5))
    assert isinstance(after, Projected) and after.sequence == 2


def test_placement_is_unchecked_without_a_partition_count() -> None:
    event = history()[0]
    elsewhere = (partition_for(event.incident_id, PARTITIONS) + 1) % PARTITIONS
    outcome = Projector(trust()).apply(signed(event, 0, partition=elsewhere))
    assert isinstance(outcome, Projected)


def test_a_hold_makes_a_takeover_packet_due() -> None:
    events = history()
    projector = Projector(trust(), partitions=PARTITIONS)
    dues = []
    for i, e in enumerate(events):
        outcome = projector.apply(signed(e, i))
        assert isinstance(outcome, Projected)
        dues.append((e.event_type, outcome.packet is not None))
    assert ("HoldDeclared", True) in dues
    assert all(not due for t, due in dues if t in ("IncidentOpened", "AuthorityDeclared"))


def test_resuming_mid_log_from_written_rows_equals_a_full_rebuild() -> None:
    events = history()
    records = [signed(e, i) for i, e in enumerate(events)]
    full = Projector(trust(), partitions=PARTITIONS)
    for r in records[:2]:
        full.apply(r)

    first = Projector(trust(), partitions=PARTITIONS)
    written = [first.apply(r) for r in records[:2]]
    # a restart: the fold so far comes back from what was written (as load_projection does)
    resumed = Projector(trust(), partitions=PARTITIONS)
    incident = events[0].incident_id
    assert resumed.needs(incident)
    seed = IncidentProjection.new(incident)
    for e in events[:2]:
        seed.advance(e)
    last = written[-1]
    assert isinstance(last, Projected)
    seed.head = last.head
    resumed.seed(seed, records[0].partition)
    assert not resumed.needs(incident)
    for r in records[2:]:
        a = full.apply(r)
        opened = resumed.open(r)
        assert not isinstance(opened, Refused)
        b = resumed.project(r, opened)
        assert isinstance(a, Projected)
        assert a.rows.ledger == b.rows.ledger
        assert full.incident_row(incident) == resumed.incident_row(incident)


def test_forgetting_a_partition_drops_only_its_incidents() -> None:
    projector = Projector(trust(), partitions=PARTITIONS)
    ids = [f"inc-{i}" for i in range(12)]
    for i, incident in enumerate(ids):
        projector.apply(signed(history(incident)[0], i))
    gone = partition_for(ids[0], PARTITIONS)
    projector.forget_partition(gone)
    for incident in ids:
        assert projector.needs(incident) == (partition_for(incident, PARTITIONS) == gone)


def test_a_signed_record_with_a_duplicate_key_is_refused_and_the_next_projects() -> None:
    """Issue 14: a rightful producer's record whose JSON has a key twice means different
    things to different parsers (the last counts here, the first in many others)."""
    events = history()
    projector = Projector(trust(), partitions=PARTITIONS)
    first = signed(events[0], 0)
    assert isinstance(projector.apply(first), Projected)
    good = signed(events[1], 1)
    text = good.value.decode()
    # The same record with its incident id given twice: first a foreign one, then its own.
    forked = text.replace('"incident_id":', '"incident_id":"inc-other","incident_id":', 1)
    value = forked.encode()
    twice = Rec(
        TOPICS.events, good.partition, 1, good.key, value, KEYS.headers(value, "directive-api")
    )
    refused = projector.apply(twice)
    assert isinstance(refused, Refused) and refused.reason == "duplicate_key", refused
    after = projector.apply(signed(events[1], 2))
    assert isinstance(after, Projected) and after.sequence == 2
