"""A handler that keeps failing, and admission errors, never stall the consumer loop
(`conn_runtime.kafka.EventLoop`, pipelined and batch mode alike).

Oracles (from the task and DESIGN.md, not from the code):
- a dependency outage is waited out however long it lasts, and never dead-letters;
- any other handler error is retried, `handler_attempts` times in all; a handler that
  then succeeds is not dead-lettered; one that never does has its record dead-lettered
  as `handler_failed` after exactly that many attempts, and the next record of the same
  incident and partition is handled;
- nothing is committed past a given-up record before its dead letter is acknowledged;
- an unexpected error while admitting a record (decode/verify) dead-letters it as
  `admission_failed` and the loop carries on; Kafka away while dead-lettering is waited
  out; a dead letter refused for good stops the loop with `ConsumerLoopFailed` (the
  process exits non-zero) instead of leaving it stalled.

The loop runs against a fake consumer holding one log per partition (seek re-reads
from an offset, as Kafka does) and a fake producer that records dead letters. Nothing
waits on a clock: the tests yield until a condition holds; the loop's own backoff is
a millisecond.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from loop_fakes import FakeEvent, FakeRecord, FakeTrusted
from pydantic import BaseModel, ValidationError

import conn_runtime.kafka as kafka_mod
from conn_runtime.kafka import (
    ADMISSION_FAILED,
    HANDLER_FAILED,
    Consumed,
    ConsumerLoopFailed,
    EventLoop,
    RecordTooLarge,
)
from conn_runtime.resilience import Backoff, describe_failure
from conn_runtime.settings import KafkaSettings
from conn_schemas.codec import UnreadableRecord

TOPIC = "t.events"
TP0 = TopicPartition(TOPIC, 0)
MODES = pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "batch"])


@dataclass
class FakeTrust:
    broken: set[int] = field(default_factory=set)
    """Offsets whose opening raises unexpectedly (a bug, not a refusal)."""
    refused: set[int] = field(default_factory=set)
    """Offsets refused as unreadable (dead-lettered with their own reason)."""

    def open(self, record: FakeRecord) -> FakeTrusted:
        if record.offset in self.broken:
            raise RuntimeError("codec bug\x1b[2J while decoding")
        if record.offset in self.refused:
            raise UnreadableRecord("not_json", "not JSON")
        return FakeTrusted(record.value)


@dataclass
class DeadLetter:
    offset: int
    reason: str
    detail: str


@dataclass
class FakeProducer:
    """Dead letters, in order; `gate` (when given) holds each acknowledgement back;
    `outage` dependency errors come first; `refuse` makes every dead letter fail for good."""

    letters: list[DeadLetter] = field(default_factory=list)
    gate: asyncio.Event | None = None
    outage: int = 0
    refuse: bool = False

    async def dead_letter(self, record: Any, reason: str, detail: str, consumer: str) -> None:
        if self.outage:
            self.outage -= 1
            raise KafkaConnectionError("broker away")
        if self.refuse:
            raise RecordTooLarge("refused for good")
        if self.gate is not None:
            await self.gate.wait()
        self.letters.append(DeadLetter(record.offset, reason, detail))


@dataclass
class LogConsumer:
    """One partition's log; `getmany` reads from the position, `seek` moves it. Every
    commit is checked by `check` (the test's oracle)."""

    log: list[FakeRecord]
    check: Callable[[int], None]
    position: int = 0
    commits: list[int] = field(default_factory=list)
    generation: int = 1

    @property
    def _coordinator(self) -> LogConsumer:
        return self

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        batch = self.log[self.position : self.position + max_records]
        if not batch:
            await asyncio.sleep(0)
            return {}
        self.position += len(batch)
        return {TP0: batch}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset

    def assignment(self) -> set[TopicPartition]:
        return {TP0}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.check(offsets[TP0])
        self.commits.append(offsets[TP0])

    @property
    def committed(self) -> int:
        return self.commits[-1] if self.commits else 0

    def highwater(self, tp: TopicPartition) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> None:
        return None

    async def stop(self) -> None:
        return None


Handler = Callable[[Consumed], Awaitable[None]]


@dataclass
class Run:
    loop: EventLoop
    consumer: LogConsumer
    producer: FakeProducer
    given_up: list[tuple[int, str]]
    task: asyncio.Task[None] | None = None

    async def until(self, condition: Callable[[], bool]) -> None:
        """Yield until `condition` holds (a generous guard turns a stall into a failure)."""
        async with asyncio.timeout(60):
            while not condition():
                assert self.task is None or not self.task.done(), "the loop stopped"
                await asyncio.sleep(0)

    async def stop(self) -> None:
        self.loop.stop_soon()
        if self.task is not None:
            await self.task


async def start(
    monkeypatch: pytest.MonkeyPatch,
    incidents: list[str],
    handler: Handler,
    *,
    pipelined: bool,
    attempts: int = 3,
    trust: FakeTrust | None = None,
    producer: FakeProducer | None = None,
    check: Callable[[int], None] = lambda _offset: None,
) -> Run:
    monkeypatch.setattr(kafka_mod, "trust_for", lambda _settings: trust or FakeTrust())
    producer = producer or FakeProducer()
    given_up: list[tuple[int, str]] = []

    async def on_given_up(item: Consumed, error: Exception) -> None:
        given_up.append((item.position.offset, type(error).__name__))

    loop = EventLoop(
        KafkaSettings(),
        group_id="g",
        topics=[TOPIC],
        handler=handler,
        producer=producer,  # type: ignore[arg-type]
        name="test",
        pipelined=pipelined,
        commit_interval=0.001,
        backoff=Backoff(initial=0.001, maximum=0.001),
        handler_attempts=attempts,
        on_given_up=on_given_up,
    )
    log = [FakeRecord(TOPIC, 0, i, FakeEvent(inc)) for i, inc in enumerate(incidents)]
    consumer = LogConsumer(log, check)
    await loop.consumer.stop()  # never started: replaced by the fake
    loop.consumer = consumer  # type: ignore[assignment]
    run = Run(loop, consumer, producer, given_up)
    run.task = asyncio.create_task(loop.run())
    return run


@MODES
async def test_a_handler_that_fails_then_succeeds_is_retried_and_not_dead_lettered(
    monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    calls: list[int] = []
    handled: list[int] = []

    async def handler(item: Consumed) -> None:
        calls.append(item.position.offset)
        if item.position.offset == 0 and calls.count(0) < 3:
            raise KeyError("missing")  # twice: the third and last allowed attempt succeeds
        handled.append(item.position.offset)

    run = await start(monkeypatch, ["a", "a"], handler, pipelined=pipelined, attempts=3)
    try:
        await run.until(lambda: handled == [0, 1] and run.consumer.committed == 2)
    finally:
        await run.stop()
    assert calls.count(0) == 3
    assert run.producer.letters == [] and run.given_up == []


@MODES
async def test_a_handler_that_always_fails_is_dead_lettered_after_exactly_the_attempts(
    monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    """a@0 always fails: tried exactly 3 times, dead-lettered as handler_failed (type
    and message), the service told; a@1 (same incident, same partition) and b@2 are
    handled; the offset is committed past all three."""
    calls: list[int] = []
    handled: list[int] = []

    async def handler(item: Consumed) -> None:
        calls.append(item.position.offset)
        if item.position.offset == 0:
            raise KeyError("region")
        handled.append(item.position.offset)

    run = await start(monkeypatch, ["a", "a", "b"], handler, pipelined=pipelined, attempts=3)
    try:
        await run.until(lambda: sorted(handled) == [1, 2] and run.consumer.committed == 3)
    finally:
        await run.stop()
    assert calls.count(0) == 3
    assert run.producer.letters == [DeadLetter(0, HANDLER_FAILED, "KeyError: 'region'")]
    assert run.given_up == [(0, "KeyError")]


@MODES
async def test_a_dependency_outage_is_waited_out_and_never_dead_lettered(
    monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    """Kafka away for many more failures than the attempts allowed: still handled."""
    failures = 10
    handled: list[int] = []

    async def handler(item: Consumed) -> None:
        nonlocal failures
        if item.position.offset == 0 and failures:
            failures -= 1
            raise KafkaConnectionError("broker away")
        handled.append(item.position.offset)

    run = await start(monkeypatch, ["a", "a"], handler, pipelined=pipelined, attempts=2)
    try:
        await run.until(lambda: handled == [0, 1] and run.consumer.committed == 2)
    finally:
        await run.stop()
    assert failures == 0
    assert run.producer.letters == [] and run.given_up == []


@MODES
async def test_nothing_is_committed_past_a_given_up_record_before_its_dead_letter_is_acked(
    monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    """The dead letter's acknowledgement is held back (and Kafka is away for the first
    two tries): every commit meanwhile stays at the failing record; once acknowledged,
    the offset moves past it."""
    gate = asyncio.Event()
    producer = FakeProducer(gate=gate, outage=2)
    handled: list[int] = []

    def check(offset: int) -> None:
        assert offset <= 1 or producer.letters, f"committed {offset} before the dead letter"

    async def handler(item: Consumed) -> None:
        if item.position.offset == 1:
            raise ValueError("bad outcome")
        handled.append(item.position.offset)

    run = await start(
        monkeypatch,
        ["a", "a", "a"],
        handler,
        pipelined=pipelined,
        attempts=1,
        producer=producer,
        check=check,
    )
    try:
        await run.until(lambda: handled == [0] and producer.outage == 0)
        for _ in range(50):  # let the loop commit (and fetch) as much as it would
            await asyncio.sleep(0)
        assert run.consumer.committed <= 1 and producer.letters == []
        gate.set()
        await run.until(lambda: handled == [0, 2] and run.consumer.committed == 3)
    finally:
        gate.set()
        await run.stop()
    assert [(d.offset, d.reason) for d in producer.letters] == [(1, HANDLER_FAILED)]


@MODES
async def test_an_unexpected_admission_error_dead_letters_the_record_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    """Decoding record 1 raises (a bug), record 2 is refused as unreadable, and Kafka is
    away for the first dead letter: both are dead-lettered with their reasons, the
    others handled, and the offset committed past everything."""
    handled: list[int] = []

    async def handler(item: Consumed) -> None:
        handled.append(item.position.offset)

    producer = FakeProducer(outage=1)
    run = await start(
        monkeypatch,
        ["a", "a", "a", "a"],
        handler,
        pipelined=pipelined,
        trust=FakeTrust(broken={1}, refused={2}),
        producer=producer,
    )
    try:
        await run.until(lambda: handled == [0, 3] and run.consumer.committed == 4)
    finally:
        await run.stop()
    assert [(d.offset, d.reason) for d in producer.letters] == [
        (1, ADMISSION_FAILED),
        (2, "not_json"),
    ]
    assert producer.letters[0].detail == "RuntimeError: codec bug [2J while decoding"


@MODES
@pytest.mark.parametrize("stage", ["handler", "admission"])
async def test_a_dead_letter_refused_for_good_stops_the_loop_loudly(
    monkeypatch: pytest.MonkeyPatch, pipelined: bool, stage: str
) -> None:
    """The record cannot be dead-lettered (refused for good, not an outage): `run()`
    raises ConsumerLoopFailed (the process exits non-zero) and nothing was committed
    past the record."""
    handled: list[int] = []

    async def handler(item: Consumed) -> None:
        if stage == "handler" and item.position.offset == 1:
            raise ValueError("bug")
        handled.append(item.position.offset)

    run = await start(
        monkeypatch,
        ["a", "b", "c"],
        handler,
        pipelined=pipelined,
        attempts=1,
        trust=FakeTrust(broken={1} if stage == "admission" else set()),
        producer=FakeProducer(refuse=True),
        check=lambda offset: None if offset <= 1 else pytest.fail(f"committed {offset}"),
    )
    assert run.task is not None
    with pytest.raises(ConsumerLoopFailed, match="RecordTooLarge"):
        async with asyncio.timeout(60):
            await run.task
    assert 1 not in handled


def test_the_dead_letter_detail_is_one_bounded_line_without_the_input() -> None:
    class Outcome(BaseModel):
        count: int

    with pytest.raises(ValidationError) as caught:
        Outcome.model_validate({"count": "token-s3cr3t"})
    detail = describe_failure(caught.value)
    assert detail.startswith("ValidationError: count: ")
    assert "s3cr3t" not in detail
    long = describe_failure(ValueError("line\n\x00\x1b[31m" + "x" * 5000))
    assert len(long) <= 300
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in long)
    assert long.startswith("ValueError: line [31mxxx")
