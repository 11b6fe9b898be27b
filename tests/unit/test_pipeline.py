"""Pipelined consumption (`conn_runtime.pipeline`, `EventLoop(pipelined=True)`).

Oracles (from the issue and DESIGN.md, not from the code):
- a committed offset means "everything below it was handled": it never exceeds the
  lowest record of its partition that was fetched and not yet finished, whatever
  order records finish in, across revokes and re-assignments;
- one incident, one order: the records of an incident are handled in offset order,
  one at a time; incidents do not wait for each other;
- a revoke fences the revoked partitions (nothing more of them starts), lets what is
  running finish, and commits only what finished.

The loop tests drive a real `EventLoop` through a fake consumer (no broker): the
fake's `commit` checks every commit against the test's own record of what the
handler finished. Nothing here waits on a clock: handlers block on events, and
interleavings come from seeded `asyncio.sleep(0)` yields.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st
from loop_fakes import FakeEvent, FakeRecord, FakeTrusted

import conn_runtime.kafka as kafka_mod
from conn_runtime.kafka import Consumed, EventLoop
from conn_runtime.pipeline import KeyedWorkers, Watermarks
from conn_runtime.resilience import Backoff
from conn_runtime.settings import KafkaSettings

TOPIC = "t.events"
TP0 = TopicPartition(TOPIC, 0)
TP1 = TopicPartition(TOPIC, 1)


# --- Watermarks: the lowest-unfinished rule ------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["fetch", "skip", "finish", "revoke"]), st.integers(0, 2), st.randoms()
    ),
    max_size=120,
)


@given(ops)
def test_the_committable_offset_never_passes_an_unfinished_record(
    steps: list[tuple[str, int, random.Random]],
) -> None:
    """Random fetches, dead-letter skips, completions in any order (including late
    completions from before a revoke) and re-assignments: after every step, for every
    partition, committable <= the lowest offset fetched in the current assignment and
    not finished in it; and with nothing unfinished it is one past the last fetched."""
    marks: Watermarks[int] = Watermarks()
    epoch = {p: 0 for p in range(3)}
    next_offset = {p: 0 for p in range(3)}
    unfinished: dict[int, set[int]] = defaultdict(set)  # current assignment only
    stale: list[tuple[int, int, int]] = []  # (partition, epoch, offset) from old assignments
    seen: dict[int, int] = {}
    for op, p, rng in steps:
        if op == "fetch":
            offset = next_offset[p] + rng.randrange(0, 3)  # gaps: compaction, markers
            marks.started(p, epoch[p], offset)
            unfinished[p].add(offset)
            next_offset[p] = seen[p] = offset + 1
        elif op == "skip":
            offset = next_offset[p] + rng.randrange(0, 2)
            marks.skipped(p, epoch[p], offset)
            next_offset[p] = seen[p] = offset + 1
        elif op == "finish":
            choices = [(p, epoch[p], o) for o in unfinished[p]] + stale
            if not choices:
                continue
            q, e, offset = rng.choice(choices)
            marks.finished(q, e, offset)
            if e == epoch[q]:
                unfinished[q].discard(offset)
            else:
                stale.remove((q, e, offset))
        else:  # revoke, then (maybe) re-assigned: re-read from an earlier offset
            stale += [(p, epoch[p], o) for o in unfinished[p]]
            marks.forget([p])
            epoch[p] += 1
            unfinished[p] = set()
            seen.pop(p, None)
            next_offset[p] = rng.randrange(0, next_offset[p] + 1)
        for q in range(3):
            got = marks.committable(q)
            if q not in seen:
                assert got is None
                continue
            assert got is not None
            if unfinished[q]:
                assert got <= min(unfinished[q])
            else:
                assert got == seen[q]


def test_a_record_seen_twice_or_backwards_is_refused() -> None:
    marks: Watermarks[int] = Watermarks()
    marks.started(0, 1, 5)
    with pytest.raises(ValueError):
        marks.started(0, 1, 5)
    with pytest.raises(ValueError):
        marks.skipped(0, 1, 4)


# --- KeyedWorkers: per-key order, bounded, keys independent ----------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=80), st.integers(1, 8), st.integers(0))
def test_each_keys_items_run_in_submission_order_one_at_a_time(
    keys: list[int], limit: int, seed: int
) -> None:
    rng = random.Random(seed)  # not st.randoms(): drawing from it inside tasks ends the test

    async def scenario() -> None:
        order: dict[int, list[int]] = defaultdict(list)
        running: set[int] = set()
        in_flight = 0
        peak = 0
        done: list[tuple[tuple[int, int], bool]] = []

        async def run(item: tuple[int, int]) -> bool:
            key, seq = item
            assert key not in running, "two items of one key at once"
            running.add(key)
            for _ in range(rng.randrange(0, 4)):
                await asyncio.sleep(0)  # a yield: other keys interleave
            order[key].append(seq)
            running.discard(key)
            return True

        def finished(item: tuple[int, int], ok: bool) -> None:
            nonlocal in_flight
            in_flight -= 1
            done.append((item, ok))

        workers: KeyedWorkers[int, tuple[int, int]] = KeyedWorkers(run, limit=limit, done=finished)
        for seq, key in enumerate(keys):
            await workers.submit(key, (key, seq))
            in_flight += 1
            peak = max(peak, in_flight)
            assert workers.in_flight <= limit
        assert await workers.wait(lambda _: True)
        for key in set(keys):
            assert order[key] == [s for s, k in enumerate(keys) if k == key]
        assert len(done) == len(keys) and all(ok for _, ok in done)
        assert peak <= limit

    asyncio.run(scenario())


async def test_a_blocked_key_does_not_hold_up_the_others_and_a_given_up_item_stops_its_key() -> (
    None
):
    gate = asyncio.Event()
    ran: list[str] = []
    outcomes: dict[str, bool] = {}

    async def run(item: str) -> bool:
        if item == "a1":
            await gate.wait()
            return False  # given up (e.g. its partition was revoked meanwhile)
        ran.append(item)
        return True

    workers: KeyedWorkers[str, str] = KeyedWorkers(
        run, limit=10, done=lambda item, ok: outcomes.__setitem__(item, ok)
    )
    for key, item in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("c", "c1")]:
        await workers.submit(key, item)
    assert await workers.wait(lambda k: k != "a")
    assert ran == ["b1", "b2", "c1"]  # a1 still blocked: b and c went on
    gate.set()
    assert await workers.wait(lambda _: True)
    assert "a2" not in ran, "a later record of a key ran after an earlier one was given up"
    assert outcomes == {"a1": False, "a2": False, "b1": True, "b2": True, "c1": True}


async def test_submit_waits_while_the_limit_is_in_flight() -> None:
    gate = asyncio.Event()

    async def run(item: int) -> bool:
        await gate.wait()
        return True

    workers: KeyedWorkers[int, int] = KeyedWorkers(run, limit=2, done=lambda *_: None)
    await workers.submit(1, 1)
    await workers.submit(2, 2)
    third = asyncio.create_task(workers.submit(3, 3))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done() and workers.in_flight == 2
    gate.set()
    await third
    assert await workers.wait(lambda _: True)


# --- the loop itself, through a fake consumer -------------------------------------------------


class FakeTrust:
    def open(self, record: FakeRecord) -> FakeTrusted:
        return FakeTrusted(record.value)


@dataclass
class FakeConsumer:
    """Hands out queued batches; checks every commit against the oracle."""

    fetched: dict[TopicPartition, set[int]]
    finished: dict[TopicPartition, set[int]]
    assigned: set[TopicPartition]
    batches: asyncio.Queue[dict[TopicPartition, list[FakeRecord]]] = field(
        default_factory=asyncio.Queue
    )
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    committed_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    generation: int = 1
    """The group generation (-1: expelled, as aiokafka resets it)."""

    @property
    def _coordinator(self) -> FakeConsumer:
        return self

    def feed(self, records: list[FakeRecord]) -> None:
        batch: dict[TopicPartition, list[FakeRecord]] = defaultdict(list)
        for r in records:
            batch[TopicPartition(r.topic, r.partition)].append(r)
        self.batches.put_nowait(dict(batch))

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        if self.batches.empty():
            await asyncio.sleep(0)
            return {}
        batch = self.batches.get_nowait()
        for tp, records in batch.items():
            self.fetched[tp].update(r.offset for r in records)
        return batch

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            assert tp in self.assigned, f"committed {tp}, which is not assigned"
            open_ = self.fetched[tp] - self.finished[tp]
            assert not open_ or offset <= min(open_), (
                f"committed {offset} on {tp} past unfinished {sorted(open_)}"
            )
        self.commits.append(dict(offsets))
        self.committed_offsets.update(offsets)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        raise AssertionError("no seek expected")

    def highwater(self, tp: TopicPartition) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> None:
        return None

    async def stop(self) -> None:
        return None


Handler = Callable[[Consumed], Awaitable[None]]


async def make_loop(
    monkeypatch: pytest.MonkeyPatch,
    handler: Handler,
    *,
    limit: int = 16,
    drain_timeout: float = 30.0,
) -> tuple[EventLoop, FakeConsumer]:
    monkeypatch.setattr(kafka_mod, "trust_for", lambda _settings: FakeTrust())
    loop = EventLoop(
        KafkaSettings(),
        group_id="g",
        topics=[TOPIC],
        handler=handler,
        producer=None,  # type: ignore[arg-type]  # nothing here is dead-lettered
        name="test",
        max_in_flight=limit,
        pipelined=True,
        commit_interval=0.001,
        drain_timeout=drain_timeout,
        backoff=Backoff(initial=0.001, maximum=0.001),
    )
    fetched: dict[TopicPartition, set[int]] = defaultdict(set)
    finished: dict[TopicPartition, set[int]] = defaultdict(set)
    fake = FakeConsumer(fetched, finished, {TP0, TP1})
    await loop.consumer.stop()  # never started: replaced by the fake
    loop.consumer = fake  # type: ignore[assignment]
    return loop, fake


def records(
    incidents: list[str],
    partition: int,
    start: int = 0,
    key: Callable[[str], bytes | None] = str.encode,
) -> list[FakeRecord]:
    return [
        FakeRecord(TOPIC, partition, start + i, FakeEvent(inc), key=key(inc))
        for i, inc in enumerate(incidents)
    ]


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition` holds (bounded by the test's own timeout)."""
    while not condition():
        await asyncio.sleep(0)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from("abcdef"), min_size=1, max_size=40),
    st.lists(st.sampled_from("uvwxyz"), min_size=1, max_size=40),
    st.integers(1, 6),
    st.integers(0),
)
def test_pipelined_loop_keeps_each_incidents_order_and_commits_only_finished_records(
    on0: list[str], on1: list[str], limit: int, seed: int
) -> None:
    """Two partitions, many incidents, handlers finishing in random orders, a
    background commit every millisecond: every commit is checked by the fake (never
    past an unfinished record); each incident's records are handled in offset order;
    after stop everything fetched is committed. Records are keyed at random: the
    loop orders by the verified incident, not by the record's key."""
    rng = random.Random(seed)

    async def scenario() -> None:
        mp = pytest.MonkeyPatch()
        handled: dict[str, list[tuple[int, int]]] = defaultdict(list)
        busy: set[str] = set()
        overlaps: list[str] = []

        async def handler(item: Consumed) -> None:
            inc = item.event.incident_id
            if inc in busy:  # not an assert: the loop would retry the handler
                overlaps.append(inc)
            busy.add(inc)
            for _ in range(rng.randrange(0, 6)):
                await asyncio.sleep(0)
            handled[inc].append((item.position.partition, item.position.offset))
            tp = TopicPartition(item.position.topic, item.position.partition)
            fake.finished[tp].add(item.position.offset)
            busy.discard(inc)

        try:
            loop, fake = await make_loop(mp, handler, limit=limit)
            keys = [b"k1", b"k2", None]
            recs0 = records(on0, 0, key=lambda _: rng.choice(keys))
            recs1 = records(on1, 1, key=lambda _: rng.choice(keys))
            cut0, cut1 = rng.randrange(len(recs0) + 1), rng.randrange(len(recs1) + 1)
            fake.feed(recs0[:cut0] + recs1[:cut1])
            fake.feed(recs0[cut0:] + recs1[cut1:])
            task = asyncio.create_task(loop.run())
            total = len(recs0) + len(recs1)
            await until(lambda: sum(map(len, handled.values())) == total)
            loop.stop_soon()
            await task
        finally:
            mp.undo()
        assert not overlaps, f"incidents handled twice at once: {overlaps}"
        for inc, positions in handled.items():
            assert positions == sorted(positions), f"{inc} handled out of order: {positions}"
        assert fake.committed_offsets == {TP0: len(recs0), TP1: len(recs1)}

    asyncio.run(scenario())


async def test_a_slow_step_does_not_hold_up_other_incidents_or_fetching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Incident A's step blocks; records of B fetched in LATER batches are handled
    meanwhile (the loop fetched again), and the commit stays at A's record."""
    gate = asyncio.Event()
    handled: list[tuple[str, int]] = []

    async def handler(item: Consumed) -> None:
        if item.event.incident_id == "a" and item.position.offset == 0:
            await gate.wait()
        handled.append((item.event.incident_id, item.position.offset))
        fake.finished[TP0].add(item.position.offset)

    loop, fake = await make_loop(monkeypatch, handler)
    fake.feed(records(["a", "b"], 0))
    fake.feed(records(["b", "a", "b"], 0, start=2))
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: ("b", 4) in handled)
        assert handled == [("b", 1), ("b", 2), ("b", 4)]  # a@3 waits behind a@0
        await until(lambda: fake.committed_offsets.get(TP0) == 0)
        gate.set()
        await until(lambda: len(handled) == 5)
        assert handled[3:] == [("a", 0), ("a", 3)]
        await until(lambda: fake.committed_offsets.get(TP0) == 5)
    finally:
        gate.set()
        loop.stop_soon()
        await task


async def test_a_failing_record_is_retried_in_place_and_never_committed_past(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = 3
    attempts: list[int] = []
    handled: list[tuple[str, int]] = []

    async def handler(item: Consumed) -> None:
        nonlocal failures
        if item.event.incident_id == "a" and item.position.offset == 1:
            attempts.append(1)
            if failures:
                failures -= 1
                raise RuntimeError("database briefly unavailable")
        handled.append((item.event.incident_id, item.position.offset))
        fake.finished[TP0].add(item.position.offset)

    loop, fake = await make_loop(monkeypatch, handler)
    fake.feed(records(["b", "a", "a", "b"], 0))
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: len(handled) == 4)
    finally:
        loop.stop_soon()
        await task
    assert len(attempts) == 4
    assert [h for h in handled if h[0] == "a"] == [("a", 1), ("a", 2)]
    assert fake.committed_offsets[TP0] == 4  # every commit before was checked by the fake


async def test_revoke_with_work_in_flight_fences_waits_and_commits_only_what_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A's first step is running when the partition is revoked: the revoke does not
    return before it finished (drain), A's next record (already fetched) is never
    started, and the revoke's commit covers exactly the records that finished."""
    gate = asyncio.Event()
    handled: list[tuple[str, int]] = []
    commits_seen_by_handler: list[int] = []

    async def handler(item: Consumed) -> None:
        if (item.event.incident_id, item.position.offset) == ("a", 0):
            await gate.wait()
            commits_seen_by_handler.append(len(fake.commits))
        handled.append((item.event.incident_id, item.position.offset))
        fake.finished[TP0].add(item.position.offset)

    loop, fake = await make_loop(monkeypatch, handler)
    fake.feed(records(["a", "b", "a", "b"], 0))
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: ("b", 3) in handled)
        await until(lambda: fake.committed_offsets.get(TP0) == 0)
        commits_before = len(fake.commits)
        revoke = asyncio.create_task(loop._revoked({TP0}))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not revoke.done(), "the revoke returned with a handler still running"
        gate.set()
        await revoke
        fake.assigned.discard(TP0)
    finally:
        gate.set()
        loop.stop_soon()
        await task
    assert ("a", 2) not in handled, "a record of a revoked partition was started"
    assert commits_seen_by_handler == [commits_before]  # nothing committed meanwhile
    # a@0, b@1, b@3 finished; a@2 was fetched and never started: commit stops at 2.
    assert fake.commits[-1] == {TP0: 2}


async def test_a_handler_that_outlives_the_drain_is_not_committed_even_after_reassignment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """drain_timeout=0: the revoke gives up waiting; the running record is not
    committed. The partition comes back (new epoch, history re-read): the old
    handler finishing late must not release the new assignment's record of the
    same offset."""
    gate = asyncio.Event()
    second = asyncio.Event()
    handled: list[tuple[int, str, int]] = []

    async def handler(item: Consumed) -> None:
        key = (item.epoch, item.event.incident_id, item.position.offset)
        if key[1:] == ("a", 0):
            await (gate if item.epoch == epoch_one else second).wait()
        handled.append(key)
        fake.finished[TP0].add(item.position.offset)

    loop, fake = await make_loop(monkeypatch, handler, drain_timeout=0)
    epoch_one = loop._epoch.get(TP0, 0)
    fake.feed(records(["a", "b"], 0))
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: any(h[1:] == ("b", 1) for h in handled))
        await loop._revoked({TP0})
        assert fake.commits[-1] == {TP0: 0}
        # Re-assigned: the same records again, under a new epoch.
        await loop._assigned({TP0})
        fake.finished[TP0].clear()
        fake.fetched[TP0].clear()
        fake.feed(records(["a", "b"], 0))
        await until(lambda: (epoch_one + 2, "b", 1) in handled)
        gate.set()  # the old handler of a@0 finishes now
        await until(lambda: (epoch_one, "a", 0) in handled)
        fake.finished[TP0].discard(0)  # oracle: the NEW a@0 has not finished
        await loop._commit(None)
        assert fake.committed_offsets[TP0] == 0
        second.set()
        await until(lambda: (epoch_one + 2, "a", 0) in handled)
    finally:
        gate.set()
        second.set()
        loop.stop_soon()
        await task
    assert fake.committed_offsets[TP0] == 2


async def test_history_is_handled_before_on_caught_up_and_nothing_after_it_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Catch-up (records below the committed offset re-read with replaying=True):
    on_caught_up sees every history record handled and no live record handled yet."""
    handled: list[tuple[int, bool]] = []
    at_caught_up: list[list[tuple[int, bool]]] = []

    async def handler(item: Consumed) -> None:
        for _ in range(item.position.offset % 3):
            await asyncio.sleep(0)  # history records of other incidents overtake
        handled.append((item.position.offset, item.replaying))
        fake.finished[TP0].add(item.position.offset)

    async def on_caught_up(partitions: set[TopicPartition]) -> None:
        at_caught_up.append(sorted(handled))

    loop, fake = await make_loop(monkeypatch, handler)
    loop._on_caught_up = on_caught_up
    loop._replay_until[TP0] = 4
    fake.feed(records(["a", "b", "c", "d", "a", "b", "c"], 0))
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: len(handled) == 7)
    finally:
        loop.stop_soon()
        await task
    assert at_caught_up == [[(0, True), (1, True), (2, True), (3, True)]]


async def test_an_expelled_member_fences_its_partitions_without_waiting_or_committing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Frozen past its session timeout, the member has no generation any more: its
    partitions may already be another's. The revoke fences them at once (no record
    of theirs starts) and commits nothing; the running handler finishes on its own."""
    gate = asyncio.Event()
    handled: list[tuple[str, int]] = []

    async def handler(item: Consumed) -> None:
        if item.position.offset == 0:
            await gate.wait()
        handled.append((item.event.incident_id, item.position.offset))
        fake.finished[TP0].add(item.position.offset)

    loop, fake = await make_loop(monkeypatch, handler)
    fake.feed(records(["a", "a"], 0))
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: fake.committed_offsets.get(TP0) == 0)
        commits = len(fake.commits)
        fake.generation = -1
        await loop._revoked({TP0})  # returns with a@0 still running
        assert handled == [] and len(fake.commits) == commits
        gate.set()
        await until(lambda: ("a", 0) in handled)
    finally:
        gate.set()
        loop.stop_soon()
        await task
    assert ("a", 1) not in handled and len(fake.commits) == commits


@pytest.mark.parametrize("expelled", [False, True], ids=["drain-gave-up", "expelled"])
async def test_a_record_given_up_after_a_revoke_does_not_take_the_reassigned_history_with_it(
    monkeypatch: pytest.MonkeyPatch, expelled: bool
) -> None:
    """a@0 is still running when the partition is revoked (the drain gives up, or the
    member was expelled: frozen past its session timeout, so nothing is waited for)
    and re-assigned, its history re-read (catch-up) and queued behind the running
    a@0 on the same incident. a@1 of the old assignment is given up when a@0 returns;
    the new assignment's a@0 and a@1 must still be handled, in order, as history.
    Dropping them with the old record left the incident's fold empty, so the next
    directive was refused as "not open" (the frozen-executor fault test in
    tests/executor/test_executor_fencing.py, with CONN_CONSUMER_PIPELINED=true)."""
    gate = asyncio.Event()
    running = asyncio.Event()
    handled: list[tuple[int, int, bool]] = []

    async def handler(item: Consumed) -> None:
        if item.epoch == 0 and item.position.offset == 0:
            running.set()
            await gate.wait()
        handled.append((item.epoch, item.position.offset, item.replaying))
        if item.epoch == 2:
            fake.finished[TP0].add(item.position.offset)

    loop, fake = await make_loop(monkeypatch, handler, drain_timeout=0)
    fake.feed(records(["a", "a"], 0))
    task = asyncio.create_task(loop.run())
    try:
        # a@0 must be INSIDE its handler at the revoke (not merely queued: a queued
        # record of a revoked partition is never started, and nothing is given up).
        await until(lambda: running.is_set() and loop._workers.in_flight == 2)
        if expelled:
            fake.generation = -1
        await loop._revoked({TP0})
        fake.generation = 2  # rejoined
        await loop._assigned({TP0})
        loop._replay_until[TP0] = 2  # catch-up: both records are history again
        fake.fetched[TP0].clear()
        fake.feed(records(["a", "a"], 0))
        await until(lambda: loop._workers.in_flight == 4)  # behind the running a@0
        gate.set()
        assert await loop._workers.wait(lambda _: True)  # every queued record settled
        assert handled == [(0, 0, False), (2, 0, True), (2, 1, True)]
        await until(lambda: fake.committed_offsets.get(TP0) == 2)
    finally:
        gate.set()
        loop.stop_soon()
        await task
