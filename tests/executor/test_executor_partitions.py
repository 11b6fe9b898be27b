"""One incident, one partition (invariant 8) at the executor: a record of an incident
on a partition other than the one its key hashes to (another client's partitioner,
an explicit partition) is dead-lettered with the reason, left out of every fold,
and the incident keeps working."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from executor_harness import ALICE, has, of_type, partition_for, step_recorded
from kafka_support import current

from conn_schemas import events as ev
from conn_schemas.values import DrainWorkerPool, GatherState

pytestmark = pytest.mark.integration

DRAIN = DrainWorkerPool(pool="cache-invalidation", region="us-east")


def incident_on(partition: int, partitions: int, prefix: str) -> str:
    for _ in range(10_000):
        candidate = f"{prefix}-{uuid.uuid4().hex[:6]}"
        if partition_for(candidate, partitions) == partition:
            return candidate
    raise AssertionError("no incident id for that partition")


async def wrong_partition_letters(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Dead letters with reason wrong_partition, from every partition of `topic`
    (waits until at least one is there)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **current().kafka_options("sre")
    )
    await consumer.start()
    try:
        await consumer._client.set_topics([topic])  # metadata outside a group
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"no partitions for {topic}"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            found += [
                r
                for records in batch.values()
                for r in records
                if dict(r.headers).get("dlq.reason") == b"wrong_partition"
            ]
        return found
    finally:
        await consumer.stop()


async def test_a_record_on_the_wrong_partition_is_dead_lettered_and_the_incident_keeps_working(
    make_harness: Any,
) -> None:
    h = await make_harness()
    partitions = len(await h.partitions())
    inc = incident_on(0, partitions, "inc-home")
    wrong = 1
    # Another incident that lives on the wrong partition, with a long history there,
    # so that the misplaced record sits at a high offset.
    neighbour = incident_on(wrong, partitions, "inc-neighbour")
    await h.open_incident(neighbour)
    for _ in range(25):
        await h.record(
            neighbour,
            ev.AlertReceived,
            ev.AlertReceivedPayload(source="manual", fingerprint="f", service="checkout"),
        )
    await h.open_incident(inc)
    proc = h.start_executor()
    first = await h.issue(inc, GatherState())
    # Its StateGathered too, not only its acceptance: the next directive is based on the
    # ledger position read now, and a StateGathered landing after that base makes it
    # stale (refused stale_base_position, as it should be).
    await h.wait_for(inc, has("StateGathered", first), what="a first gather", procs=(proc,))

    # A close of `inc`, keyed by its id and signed by its rightful producer, but on
    # partition 1 (e.g. a client whose partitioner is not murmur2): trusted, yet with
    # no place in the incident's order.
    closing = ev.new_event(
        ev.IncidentClosed,
        incident_id=inc,
        payload=ev.IncidentClosedPayload(resolution="sent elsewhere"),
        actor=ALICE,
        producer="directive-api",
    )
    md = await h.writer.append_to_partition(closing, wrong)
    assert md.partition == wrong and md.offset > 20

    key = await h.issue(inc, DRAIN)
    events = await h.wait_for(inc, step_recorded(key), what="the step after it", procs=(proc,))
    assert of_type(events, "StepSucceeded", key), "the incident keeps working, not closed"
    assert (await h.side_effects()).get(key) == 1
    letters = await wrong_partition_letters(h.bootstrap, h.topics.deadletter)
    assert letters, "dead-lettered with its reason"
    headers = dict(letters[0].headers)
    assert headers["dlq.source.partition"] == str(wrong).encode()
    assert f"belongs on partition 0 of {partitions}".encode() in headers["dlq.detail"]
