"""`conn_core.bridge.directive_item` is memoised (the bridge lists up to 500 directives
and the packager rebuilds it after every batch): the item must still follow every change
of its record, and two records that differ only in how a time is written must not share
an item (equal instants in different zones compare equal in Python)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from conn_core.bridge import directive_item
from conn_core.state import DirectiveRecord, DirectiveStatus
from conn_schemas.values import GatherState, RefusalReason, RestartDependencyTier, Verdict


def fresh(record: DirectiveRecord) -> dict[str, object]:
    """The item as built without any memo (the same fields, by hand)."""
    from conn_core import bridge

    return bridge._directive_item.__wrapped__(  # type: ignore[attr-defined]
        bridge._ItemKey(
            record.correlation_id,
            record.action,
            record.actor_id,
            record.issued_sequence,
            record.consequential,
            record.status,
            record.verdict,
            record.refusal,
            record.refusal_detail,
            bridge._instant(record.started_at),
            bridge._instant(record.finished_at),
        )
    ).model_dump(mode="json")


def record(cid: str = "c-1") -> DirectiveRecord:
    return DirectiveRecord(
        correlation_id=cid,
        action=RestartDependencyTier(tier="cache", region="us-east"),
        actor_id="alice",
        issued_sequence=3,
        based_on_sequence=2,
        consequential=True,
    )


def test_the_item_follows_every_change_of_its_record() -> None:
    rec = record()
    seen = [directive_item(rec).model_dump(mode="json")]
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    changes = [
        ("status", DirectiveStatus.STARTED),
        ("started_at", at),
        ("status", DirectiveStatus.SUCCEEDED),
        ("finished_at", at + timedelta(seconds=2)),
        ("verdict", Verdict.RECOVERED),
        ("refusal", RefusalReason.STALE_BASE),
        ("refusal_detail", "token=hunter2 was refused"),
        ("actor_id", "bob"),
        ("issued_sequence", 4),
        ("consequential", False),
        ("action", GatherState(regions=("us-east",))),
    ]
    for field, value in changes:
        setattr(rec, field, value)
        item = directive_item(rec).model_dump(mode="json")
        assert item == fresh(rec), field
        assert item != seen[-1], f"{field} changed, the item did not"
        seen.append(item)
    assert "hunter2" not in str(seen[-1])  # still redacted


def test_equal_instants_in_other_zones_get_their_own_item() -> None:
    utc, plus2 = record("c-utc"), record("c-utc")
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    utc.started_at = at
    plus2.started_at = at.astimezone(timezone(timedelta(hours=2)))
    assert utc.started_at == plus2.started_at  # why the offset is part of the key
    a = directive_item(utc).model_dump(mode="json")
    b = directive_item(plus2).model_dump(mode="json")
    assert a["started_at"] != b["started_at"]
    assert (a, b) == (fresh(utc), fresh(plus2))
