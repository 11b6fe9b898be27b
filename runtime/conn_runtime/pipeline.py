"""Pipelined consumption for `conn_runtime.kafka.EventLoop` (its `pipelined=True` mode).

Two small parts, both free of Kafka so they can be tested on their own:

- `Watermarks`: per partition, the offsets handed to workers and not finished yet.
  The offset that may be committed is the lowest unfinished one (or one past the
  last record seen when nothing is unfinished): a commit never passes a record
  whose handling has not completed, whatever order the records finish in. Each
  partition's marks belong to one assignment epoch; a late finish from an older
  epoch (a handler that outlived a revoke) changes nothing.
- `KeyedWorkers`: one worker task per key (an incident on its partition) that runs
  that key's records strictly in submission order, incidents in parallel; the
  number of records submitted and not finished is bounded, so a slow step makes
  `submit` wait (back-pressure) instead of buffering without limit.

`ConsumerSettings` holds the environment switches (CONN_CONSUMER_PIPELINED,
CONN_CONSUMER_COMMIT_INTERVAL_SECONDS, CONN_CONSUMER_DRAIN_SECONDS,
CONN_CONSUMER_HANDLER_ATTEMPTS).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

P = TypeVar("P", bound=Hashable)
"""A partition (e.g. aiokafka's TopicPartition)."""
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class ConsumerSettings(BaseSettings):
    """Env: CONN_CONSUMER_PIPELINED (true/false; unset: the service's own default),
    CONN_CONSUMER_COMMIT_INTERVAL_SECONDS (how often a pipelined loop commits; it
    also commits on revoke and on stop), CONN_CONSUMER_DRAIN_SECONDS (how long a
    revoke waits for the handlers of the revoked partitions before giving them up:
    what they did not finish is not committed, so the new owner gets it again),
    CONN_CONSUMER_HANDLER_ATTEMPTS (how many times a handler that raises for a reason
    that is not a dependency outage is tried on one record before the record is
    dead-lettered as `handler_failed` and the loop carries on; a dependency outage is
    waited out however long it lasts and never counts)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    conn_consumer_pipelined: bool | None = None
    conn_consumer_commit_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    conn_consumer_drain_seconds: float = Field(default=10.0, ge=0, le=600)
    conn_consumer_handler_attempts: int = Field(default=5, ge=1, le=100)


@dataclass
class _Marks:
    epoch: int
    next: int
    """One past the highest offset seen."""
    unfinished: set[int] = field(default_factory=set)


class Watermarks(Generic[P]):
    """What may be committed per partition: never past an unfinished record."""

    def __init__(self) -> None:
        self._marks: dict[P, _Marks] = {}

    def _for(self, tp: P, epoch: int, offset: int) -> _Marks:
        marks = self._marks.get(tp)
        if marks is None or marks.epoch != epoch:
            # A new assignment of the partition: start from this record.
            marks = self._marks[tp] = _Marks(epoch=epoch, next=offset)
        return marks

    def started(self, tp: P, epoch: int, offset: int) -> None:
        """A record was handed to a worker (records of a partition in offset order)."""
        marks = self._for(tp, epoch, offset)
        if offset < marks.next:
            raise ValueError(f"offset {offset} of {tp} seen out of order (next {marks.next})")
        marks.unfinished.add(offset)
        marks.next = offset + 1

    def skipped(self, tp: P, epoch: int, offset: int) -> None:
        """A record that needs no handling (dead-lettered): finished as soon as seen."""
        marks = self._for(tp, epoch, offset)
        if offset < marks.next:
            raise ValueError(f"offset {offset} of {tp} seen out of order (next {marks.next})")
        marks.next = offset + 1

    def finished(self, tp: P, epoch: int, offset: int) -> None:
        """A record's handling completed. Ignored if the partition has been forgotten
        or re-assigned since (`epoch` differs): an old handler cannot release a new
        assignment's record of the same offset."""
        marks = self._marks.get(tp)
        if marks is not None and marks.epoch == epoch:
            marks.unfinished.discard(offset)

    def committable(self, tp: P) -> int | None:
        """The offset to commit for `tp` (the next record to read after a restart):
        the lowest unfinished offset, else one past the last record seen."""
        marks = self._marks.get(tp)
        if marks is None:
            return None
        return min(marks.unfinished) if marks.unfinished else marks.next

    def epoch(self, tp: P) -> int | None:
        marks = self._marks.get(tp)
        return None if marks is None else marks.epoch

    def unfinished(self, tp: P) -> int:
        marks = self._marks.get(tp)
        return 0 if marks is None else len(marks.unfinished)

    def partitions(self) -> list[P]:
        return list(self._marks)

    def forget(self, partitions: Iterable[P]) -> None:
        for tp in partitions:
            self._marks.pop(tp, None)


Run = Callable[[T], Awaitable[bool]]
"""Handle one item; True when it is finished, False when it was given up (stopping,
or its partition revoked): the key's later items are then dropped, unhandled."""


class KeyedWorkers(Generic[K, T]):
    """One ordered worker per key, keys in parallel, at most `limit` items submitted
    and not finished (queued or running) at any time."""

    def __init__(
        self,
        run: Run[T],
        *,
        limit: int,
        done: Callable[[T, bool], None],
        name: str = "worker",
        related: Callable[[T, T], bool] = lambda _a, _b: True,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._run = run
        self._done = done
        """Called once per submitted item: (item, finished)."""
        self._related = related
        """After an item is given up, the key's later items `related` to it are dropped
        (e.g. of the same assignment epoch); the others (a newer assignment's records
        queued behind it) still run, in order."""
        self._slots = asyncio.Semaphore(limit)
        self._queues: dict[K, deque[T]] = {}
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._name = name

    async def submit(self, key: K, item: T) -> None:
        """Queue `item` behind the key's earlier items; waits while `limit` items are
        in flight."""
        await self._slots.acquire()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(item)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._work(key), name=f"{self._name}-{key}")

    async def _work(self, key: K) -> None:
        queue = self._queues[key]
        try:
            while queue:
                item = queue[0]
                finished = False
                try:
                    finished = await self._run(item)
                finally:
                    queue.popleft()
                    self._slots.release()
                    self._done(item, finished)
                if not finished:
                    # Never run a later record of the key after this one was given up.
                    while queue and self._related(item, queue[0]):
                        self._done(queue.popleft(), False)
                        self._slots.release()
        finally:
            while queue:  # given up (or cancelled): the rest stays unhandled
                self._done(queue.popleft(), False)
                self._slots.release()
            del self._queues[key]
            del self._tasks[key]

    def keys(self) -> list[K]:
        return list(self._tasks)

    @property
    def in_flight(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def wait(self, keys: Callable[[K], bool], within: float | None = None) -> bool:
        """Wait until the workers of the keys `keys` selects have finished (including
        workers started meanwhile for those keys). True if they all did in time."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while True:
            tasks = [t for k, t in self._tasks.items() if keys(k)]
            if not tasks:
                return True
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(tasks, timeout=left)

    async def cancel(self) -> None:
        """Cancel every worker (their unfinished items are reported not finished)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
