"""The shared Kafka plumbing against the real broker: every event type round-trips
through conn.events signed by its rightful producer, unreadable and unsigned records
are dead-lettered with their reason and source, the loop carries on, and offsets are
committed only after handling."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka_support import Identities, LedgerWriter, prefix_of

from conn_runtime.kafka import Consumed, EventLoop, EventProducer
from conn_runtime.settings import KafkaSettings, Topics
from conn_schemas.codec import encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from builders import History, one_of_each

pytestmark = pytest.mark.integration


def settings_for(bootstrap: str, topics: Topics, trust: Identities) -> KafkaSettings:
    """The consuming side acts as the executor, in the executor's group."""
    return trust.settings(bootstrap, topics, "executor")


def executor_group(topics: Topics) -> str:
    return f"{prefix_of(topics)}conn-executor"


async def consume_until(
    loop: EventLoop, seen: list[Consumed], count: int, timeout: float = 30
) -> None:
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(timeout):
            while len(seen) < count:
                await asyncio.sleep(0.05)
    finally:
        loop.stop_soon()
        await task


async def test_every_event_type_round_trips_through_kafka(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    settings = settings_for(kafka_bootstrap, conn_topics, trust)
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    events = []
    async with writer, EventProducer(settings, producer_name="test") as producer:
        for event in one_of_each():
            topic = conn_topics.control if event.incident_id == "_global" else None
            events.append(await writer.append(event, topic=topic))
        seen: list[Consumed] = []

        async def handler(item: Consumed) -> None:
            seen.append(item)

        loop = EventLoop(
            settings,
            group_id=executor_group(conn_topics),
            topics=[conn_topics.events, conn_topics.control],
            handler=handler,
            producer=producer,
            name="roundtrip",
        )
        await loop.start()
        try:
            await consume_until(loop, seen, len(events))
        finally:
            await loop.stop()
    assert sorted((c.event for c in seen), key=lambda e: str(e.event_id)) == sorted(
        events, key=lambda e: str(e.event_id)
    )
    # Each incident's events arrive in the order they were appended.
    per_incident = [c.event for c in seen if c.event.incident_id == "inc-every"]
    assert per_incident == [e for e in events if e.incident_id == "inc-every"]
    # Each reached the handler with the principal whose signature it carries.
    assert {c.signer for c in seen} == {e.producer for e in events}
    assert all(c.signer == c.event.producer for c in seen)


async def test_unreadable_records_are_dead_lettered_and_the_loop_carries_on(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    settings = settings_for(kafka_bootstrap, conn_topics, trust)
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    good_before, good_after = (
        writer.stamp(History("inc-dlq").open().events[0]),
        writer.stamp(History("inc-dlq").open().events[0]),
    )
    async with writer, EventProducer(settings, producer_name="test") as producer:
        api = await writer.producer("directive-api")
        await api.append(good_before)
        # Signed, but not a Conn event (the signature is checked first, then the bytes).
        await api.publish(conn_topics.events, b"inc-dlq", b"{definitely not json")
        await api.publish(
            conn_topics.events, b"inc-dlq", b'{"event_type": "Teleported", "schema_version": 1}'
        )
        # A well-formed event nobody signed.
        unsigned = writer.stamp(History("inc-dlq").open().events[0])
        await api.publish(conn_topics.events, b"inc-dlq", encode(unsigned), sign=False)
        await api.append(good_after)
        seen: list[Consumed] = []

        async def handler(item: Consumed) -> None:
            seen.append(item)

        loop = EventLoop(
            settings,
            group_id=executor_group(conn_topics),
            topics=[conn_topics.events],
            handler=handler,
            producer=producer,
            name="dlq-test",
        )
        await loop.start()
        try:
            await consume_until(loop, seen, 2)
        finally:
            await loop.stop()
    assert [c.event.event_id for c in seen] == [good_before.event_id, good_after.event_id]

    dlq = AIOKafkaConsumer(
        conn_topics.deadletter,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        **trust.kafka_options("sre"),
    )
    await dlq.start()
    try:
        records = []
        async with asyncio.timeout(20):
            while len(records) < 3:
                batch = await dlq.getmany(timeout_ms=500)
                for recs in batch.values():
                    records.extend(recs)
    finally:
        await dlq.stop()
    headers = [dict((k, v.decode()) for k, v in r.headers) for r in records]
    assert [h["dlq.reason"] for h in headers] == ["not_json", "unknown_event_type", "unsigned"]
    assert all(h["dlq.source.topic"] == conn_topics.events for h in headers)
    assert [int(h["dlq.source.offset"]) for h in headers] == [1, 2, 3]
    assert records[0].value == b"{definitely not json"  # nothing lost: the original bytes
    assert records[2].value == encode(unsigned)
    # Dead letters are not re-signed by the consumer; the source's signature travels along.
    assert "conn-sig" not in headers[0] and "dlq.source.conn-sig" in headers[0]


async def test_offsets_are_committed_only_after_handling(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    """A handler that fails is retried (the record is not skipped) and the
    committed offset never runs ahead of the work."""
    settings = settings_for(kafka_bootstrap, conn_topics, trust)
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    async with writer, EventProducer(settings, producer_name="test") as producer:
        await writer.append_many(History("inc-retry").open().declare().events)
        attempts: list[str] = []
        seen: list[Consumed] = []

        async def flaky(item: Consumed) -> None:
            attempts.append(item.event.event_type)
            if (
                item.event.event_type == "AuthorityDeclared"
                and attempts.count("AuthorityDeclared") < 3
            ):
                raise RuntimeError("database briefly unavailable")
            seen.append(item)

        loop = EventLoop(
            settings,
            group_id=executor_group(conn_topics),
            topics=[conn_topics.events],
            handler=flaky,
            producer=producer,
            name="retry",
        )
        await loop.start()
        try:
            await consume_until(loop, seen, 2)
            committed = {tp: await loop.consumer.committed(tp) for tp in loop.consumer.assignment()}
        finally:
            await loop.stop()
    assert [c.event.event_type for c in seen] == ["IncidentOpened", "AuthorityDeclared"]
    assert attempts.count("AuthorityDeclared") == 3
    assert sum(v or 0 for v in committed.values()) == 2


async def _consume_all(
    settings: KafkaSettings, topics: Topics, producer: EventProducer
) -> list[Consumed]:
    """Everything a reader with `settings`' keyring folds from conn.events, from offset 0
    up to the end (read-only view: refused records are skipped and counted)."""
    seen: list[Consumed] = []
    assigned: set[object] = set()
    caught: set[object] = set()
    done = asyncio.Event()

    async def handler(item: Consumed) -> None:
        seen.append(item)

    async def on_assigned(partitions: set[object]) -> None:
        assigned.update(partitions)
        if assigned <= caught:
            done.set()

    async def on_caught_up(partitions: set[object]) -> None:
        caught.update(partitions)
        if assigned and assigned <= caught:
            done.set()

    loop = EventLoop(
        settings,
        group_id=None,
        topics=[topics.events],
        handler=handler,
        producer=producer,
        name="rotation-reader",
        dead_letter=False,
        catch_up=True,
        on_assigned=on_assigned,  # type: ignore[arg-type]
        on_caught_up=on_caught_up,  # type: ignore[arg-type]
    )
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        loop.stop_soon()
        await task
        await loop.stop()
    return seen


async def test_key_rotation_old_listed_key_verifies_removed_key_does_not(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities, tmp_path: Path
) -> None:
    """An integration rotates its key: events signed with the old key verify while it is
    still listed; once removed from the keyring, its new events do not (and a process
    holding only the removed key cannot even start appending)."""
    from conn_runtime.trust import TrustConfigError, read_keyring_file, write_keyring_file
    from conn_schemas.signing import (
        Keyring,
        generate_private_key,
        new_key_id,
        private_key_pem,
        public_key_b64,
        sign,
    )

    name = "example-integration"
    base = read_keyring_file(trust.keyring_file).to_mapping()
    old_kid = trust.keys.key_ids[name]
    new_key = generate_private_key()
    new_kid = new_key_id(name, new_key.public_key())
    (tmp_path / "new.pem").write_bytes(private_key_pem(new_key))
    rotated = tmp_path / "rotated.yaml"
    base["principals"][name]["keys"].append(
        {"id": new_kid, "public_key": public_key_b64(new_key.public_key())}
    )
    write_keyring_file(rotated, Keyring.from_mapping(base))

    def settings(keyring: Path, key: Path | None) -> KafkaSettings:
        s = trust.settings(kafka_bootstrap, conn_topics, name)
        return s.model_copy(update={"conn_keyring_file": keyring, "conn_signing_key_file": key})

    from conn_schemas.events import AlertReceived, AlertReceivedPayload, new_event
    from conn_schemas.values import Actor

    def note(text: str) -> AlertReceived:
        """An alert: a type the integration may sign."""
        return new_event(
            AlertReceived,
            incident_id="inc-rotate",
            payload=AlertReceivedPayload(source="manual", fingerprint=text, service="checkout"),
            actor=Actor.service(name),
            producer=name,
        )

    async with (
        EventProducer(settings(rotated, trust.key_file(name)), producer_name="old") as old,
        EventProducer(settings(rotated, tmp_path / "new.pem"), producer_name="new") as new,
    ):
        assert (old.signer.key_id, new.signer.key_id) == (old_kid, new_kid)
        by_old, by_new = note("old-key"), note("new-key")
        await old.append(by_old)
        await new.append(by_new)
        seen = await _consume_all(settings(rotated, None), conn_topics, new)
        assert {c.event.event_id for c in seen} == {by_old.event_id, by_new.event_id}

        # The old key is removed from the keyring.
        base["principals"][name]["keys"] = [
            k for k in base["principals"][name]["keys"] if k["id"] != old_kid
        ]
        removed = tmp_path / "removed.yaml"
        write_keyring_file(removed, Keyring.from_mapping(base))
        with pytest.raises(TrustConfigError, match="not in the keyring"):
            EventProducer(settings(removed, trust.key_file(name)), producer_name="stale")
        # Someone still holding the old key signs a new event by hand: refused.
        late = note("old-key-after-removal")
        value = encode(late)
        await new.publish(
            conn_topics.events,
            late.incident_id.encode(),
            value,
            sign(value, trust.keys.private[name], old_kid),
            sign=False,
        )
        still = note("new-key-after-removal")
        await new.append(still)
        seen = await _consume_all(settings(removed, None), conn_topics, new)
        assert {c.event.event_id for c in seen} == {by_new.event_id, still.event_id}
        assert late.event_id not in {c.event.event_id for c in seen}


async def test_a_retired_key_keeps_its_history_and_signs_nothing_new(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities, tmp_path: Path
) -> None:
    """Retiring (not removing) a key: the broker stamps every record's append time on
    conn.events (LogAppendTime, a time no producer chooses), so what the key signed
    before its retirement keeps verifying on replay, and nothing appended after does."""
    from datetime import UTC, datetime

    from conn_runtime.trust import read_keyring_file, write_keyring_file
    from conn_schemas.events import AlertReceived, AlertReceivedPayload, new_event
    from conn_schemas.signing import Keyring, sign
    from conn_schemas.values import Actor

    name = "example-integration"
    key, kid = trust.keys.private[name], trust.keys.key_ids[name]

    def note(text: str) -> AlertReceived:
        return new_event(
            AlertReceived,
            incident_id="inc-retire",
            payload=AlertReceivedPayload(source="manual", fingerprint=text, service="checkout"),
            actor=Actor.service(name),
            producer=name,
        )

    reader = trust.settings(kafka_bootstrap, conn_topics, name)
    async with EventProducer(reader, producer_name="writer") as writer:

        async def append_signed(event: AlertReceived) -> int:
            value = encode(event)
            pos = await writer._producer.send_and_wait(
                conn_topics.events,
                value,
                key=event.incident_id.encode(),
                headers=sign(value, key, kid),
            )
            assert pos.timestamp_type == 1, "conn.events is stamped by the broker"
            return int(pos.timestamp)

        before = note("before-retirement")
        retired_at_ms = await append_signed(before)
        after = note("after-retirement")
        while await append_signed(after) <= retired_at_ms:  # a later broker millisecond
            after = note("after-retirement")

        doc = read_keyring_file(trust.keyring_file).to_mapping()
        (entry,) = doc["principals"][name]["keys"]
        entry["not_after"] = datetime.fromtimestamp(retired_at_ms / 1000, UTC).isoformat()
        retired = tmp_path / "retired.yaml"
        write_keyring_file(retired, Keyring.from_mapping(doc))
        seen = await _consume_all(
            reader.model_copy(update={"conn_keyring_file": retired}), conn_topics, writer
        )
    ids = {c.event.event_id for c in seen}
    assert before.event_id in ids
    assert after.event_id not in ids
