"""The verified-record cache (`conn_runtime.trust.VerifiedCache`): the readers of one
process (consumer loops, the executor's look-ahead) verify and decode a record once,
and the cache never lets an unverified or different record through.

Oracle: DESIGN.md "A signed log" (every consumer verifies before it folds or acts) and
`tests/trust_support.forgeries` (every way a record can be forged, with the reason it
must be refused). Each forgery is opened at the very position a genuine record was
just verified and cached at (what a recreated topic, or a forger racing the owner,
would present), and must be refused exactly as by a reader without a cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import one_of_each
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Keys, forgeries, restamp

from conn_runtime import trust as trust_mod
from conn_runtime.settings import KafkaSettings, Topics
from conn_runtime.trust import LOG_APPEND_TIME, RawRecord, Trust, VerifiedCache, write_keyring_file
from conn_schemas import events as ev
from conn_schemas.codec import UnreadableRecord, encode
from conn_schemas.signing import SIGNATURE_HEADER, sign

TOPICS = Topics.with_prefix("cache.")
RETIRED_AT = datetime(2026, 6, 1, tzinfo=UTC)
KEYS = Keys.fresh().with_retired(RETIRED_AT)


Rec = RawRecord
"""A consumed record as the runtime takes it from faust or a test."""


def stamped() -> list[ev.Envelope]:
    out = []
    for event in one_of_each():
        if event.incident_id == ev.GLOBAL_INCIDENT:
            continue  # conn.control: covered by the same key (topic kind), kept simple here
        role = OWNER[event.event_type]
        out.append(restamp(event, PRINCIPAL_OF_ROLE[role], role))
    return out


def genuine(event: ev.Envelope, offset: int = 7) -> Rec:
    value = encode(event)
    who = PRINCIPAL_OF_ROLE[OWNER[event.event_type]]
    return Rec(
        TOPICS.events, 0, offset, event.incident_id.encode(), value, KEYS.headers(value, who)
    )


def outcome(trust: Trust, record: Rec) -> tuple[Any, ...]:
    try:
        t = trust.open(record)
    except UnreadableRecord as exc:
        return ("refused", exc.reason)
    return ("trusted", t.event, t.principal, t.role, t.key_id)


@pytest.mark.parametrize("event", stamped(), ids=lambda e: e.event_type)
def test_a_forged_record_at_a_cached_position_is_refused_as_without_a_cache(
    event: ev.Envelope,
) -> None:
    cached = Trust(KEYS.keyring, TOPICS, VerifiedCache())
    plain = Trust(KEYS.keyring, TOPICS)
    real = genuine(event)
    assert outcome(cached, real)[0] == "trusted"
    assert len(cached.cache or ()) == 1
    tried = 0
    for forgery in forgeries(event, KEYS):
        # Same topic, partition and offset as the genuine record now in the cache.
        forged = Rec(
            real.topic, real.partition, real.offset, forgery.key, forgery.value, forgery.headers
        )
        assert outcome(cached, forged) == ("refused", forgery.reason), forgery.name
        assert outcome(plain, forged) == ("refused", forgery.reason), forgery.name
        tried += 1
    assert tried >= 5
    # The genuine record still opens (from the cache) as it did.
    assert outcome(cached, real) == outcome(plain, real)


def test_a_second_signature_header_is_not_served_from_the_cache() -> None:
    event = stamped()[0]
    cached = Trust(KEYS.keyring, TOPICS, VerifiedCache())
    real = genuine(event)
    cached.open(real)
    doubled = Rec(
        real.topic,
        real.partition,
        real.offset,
        real.key,
        real.value,
        [*real.headers, (SIGNATURE_HEADER, real.headers[0][1])],
    )
    assert outcome(cached, doubled) == ("refused", "bad_signature")


def test_the_same_bytes_appended_after_their_key_retired_are_refused() -> None:
    """A retired key's records verify only if the broker appended them before the
    retirement: the append time is part of what the cache is keyed on."""
    event = stamped()[0]
    who = PRINCIPAL_OF_ROLE[OWNER[event.event_type]]
    old, old_kid = KEYS.retired[who]
    value = encode(event)
    headers = sign(value, old, old_kid)
    before = int((RETIRED_AT - timedelta(days=1)).timestamp() * 1000)
    after = int((RETIRED_AT + timedelta(days=1)).timestamp() * 1000)
    cached = Trust(KEYS.keyring, TOPICS, VerifiedCache())

    def at(ts: int) -> Rec:
        return Rec(
            TOPICS.events, 0, 3, event.incident_id.encode(), value, headers, ts, LOG_APPEND_TIME
        )

    assert outcome(cached, at(before))[0] == "trusted"
    assert outcome(cached, at(after)) == ("refused", "key_retired")


def test_a_record_read_twice_is_verified_and_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_open = trust_mod.open_record

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("value"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(trust_mod, "open_record", counting)
    cached = Trust(KEYS.keyring, TOPICS, VerifiedCache())
    event = stamped()[0]
    first = cached.open(genuine(event))
    assert cached.open(genuine(event)) is first
    assert len(calls) == 1
    # Another position is another record: verified on its own.
    cached.open(genuine(event, offset=8))
    assert len(calls) == 2
    # Refusals are never cached: a forged record is verified (and refused) every time.
    forged = Rec(TOPICS.events, 0, 9, event.incident_id.encode(), encode(event), [])
    for _ in range(2):
        with pytest.raises(UnreadableRecord):
            cached.open(forged)
    assert len(calls) == 4


def test_the_cache_is_bounded() -> None:
    cache = VerifiedCache(size=3)
    cached = Trust(KEYS.keyring, TOPICS, cache)
    event = stamped()[0]
    for offset in range(10):
        cached.open(genuine(event, offset))
    assert len(cache) == 3
    assert cache.misses == 10 and cache.hits == 0
    cached.open(genuine(event, 9))
    assert cache.hits == 1


def test_readers_of_one_process_share_one_trust(tmp_path: Any) -> None:
    """What makes "decode once per process" hold: the consumer loops and the executor's
    look-ahead each call `trust_for(settings)`; they get one Trust and one cache. A
    different keyring gets its own (a cache is only valid under its keyring)."""
    path = tmp_path / "keyring.yaml"
    write_keyring_file(path, KEYS.keyring)
    settings = KafkaSettings(conn_keyring_file=path, conn_topic_prefix="cache.")
    first = trust_mod.trust_for(settings)
    assert trust_mod.trust_for(settings) is first and first.cache is not None
    assert trust_mod.trust_for(settings, shared=False).cache is None
    other = tmp_path / "other.yaml"
    write_keyring_file(other, Keys.fresh().keyring)
    theirs = trust_mod.trust_for(KafkaSettings(conn_keyring_file=other, conn_topic_prefix="cache."))
    assert theirs is not first and theirs.cache is not first.cache
