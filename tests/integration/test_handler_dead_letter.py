"""A service whose handler raises on one record (a bug, not an outage), on the real
broker: the record is tried CONN_CONSUMER_HANDLER_ATTEMPTS times, dead-lettered as
`handler_failed` with the error's type and message and its source position, the
service's `handle_failed` is told and the record is folded anyway; the incident's next
record is handled, and the group's committed offset ends past all of them. Both
consumer modes (pipelined, batch)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_support import Identities, LedgerWriter, prefix_of

from conn_core.state import IncidentState
from conn_runtime.kafka import Consumed
from conn_runtime.service import ConsumerService
from conn_runtime.settings import Topics
from conn_schemas.events import AuthorityDeclared

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from builders import History

pytestmark = pytest.mark.integration


class Flaky(ConsumerService):
    """Raises on every AuthorityDeclared; records what it handled and was told."""

    name = "flaky"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: Counter[str] = Counter()
        self.handled: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.done = asyncio.Event()

    async def handle(self, consumed: Consumed, before: IncidentState) -> None:
        event_type = consumed.event.event_type
        self.calls[event_type] += 1
        if isinstance(consumed.event, AuthorityDeclared):
            raise KeyError("boom")
        self.handled.append(event_type)
        if len(self.handled) == 2:
            self.done.set()

    async def handle_failed(
        self, consumed: Consumed, before: IncidentState, error: Exception
    ) -> None:
        self.failed.append((consumed.event.event_type, type(error).__name__))


@pytest.mark.parametrize("pipelined", ["true", "false"])
async def test_a_record_the_handler_fails_on_is_dead_lettered_and_the_next_is_handled(
    kafka_bootstrap: str,
    conn_topics: Topics,
    trust: Identities,
    monkeypatch: pytest.MonkeyPatch,
    pipelined: str,
) -> None:
    monkeypatch.setenv("CONN_CONSUMER_HANDLER_ATTEMPTS", "2")
    monkeypatch.setenv("CONN_CONSUMER_PIPELINED", pipelined)
    settings = trust.settings(kafka_bootstrap, conn_topics, "executor")
    group = f"{prefix_of(conn_topics)}conn-executor"
    history = History("inc-handler-fails").open().declare()
    history.alert()
    writer = LedgerWriter(trust, kafka_bootstrap, conn_topics)
    async with writer:
        written = [await writer.append_at(e) for e in history.events]
    (bad,) = [pos for e, pos in written if isinstance(e, AuthorityDeclared)]
    last = written[-1][1]

    service = Flaky(settings, group_id=group, follow_control=False)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        async with asyncio.timeout(60):  # a guard against a stall, not a measurement
            await service.done.wait()
    finally:
        stop.set()
        await task
    assert service.handled == ["IncidentOpened", "AlertReceived"]
    assert service.calls["AuthorityDeclared"] == 2
    assert service.failed == [("AuthorityDeclared", "KeyError")]
    state = service.folds.states["inc-handler-fails"]
    assert state.authority is not None, "the given-up record was not folded"

    reader = AIOKafkaConsumer(
        conn_topics.deadletter,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        **trust.kafka_options("sre"),
    )
    committed_by = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        **trust.kafka_options("executor"),
    )
    await reader.start()
    await committed_by.start()
    try:
        letters = []
        async with asyncio.timeout(30):
            while not letters:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    letters.extend(records)
        committed = await committed_by.committed(TopicPartition(last.topic, last.partition))
    finally:
        await reader.stop()
        await committed_by.stop()
    (letter,) = letters
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["dlq.reason"] == "handler_failed"
    assert headers["dlq.detail"] == "KeyError: 'boom'"
    assert (headers["dlq.source.topic"], int(headers["dlq.source.offset"])) == (
        bad.topic,
        bad.offset,
    )
    assert int(headers["dlq.source.partition"]) == bad.partition
    assert committed == last.offset + 1
