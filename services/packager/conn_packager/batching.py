"""Group commit for the live packager: the stream hands records over one at a time, the
projection takes everything handed over since it last looked, as one batch.

`Batcher.put` returns at once unless `limit` items are already waiting (back-pressure:
the stream then waits for the projection); `Batcher.take` waits for the first item and
returns all waiting ones. While the projection is idle a record is taken as soon as it
is put (no added latency); while it is busy with one batch, the next one accumulates.

`project_batches` is the projection's loop: each batch is projected (its transaction
committed) before any of its records is acked, so the stream's committed offset never
passes a record whose rows are not durable. Records still waiting when their partition
is revoked are projected all the same: PostgreSQL's `projection_offsets` (row-locked)
skips what the partition's new owner applied meanwhile, and applies the rest once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T]):
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._items: list[T] = []
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        while len(self._items) >= self.limit:
            self._space.clear()
            await self._space.wait()
        self._items.append(item)
        self._ready.set()

    async def take(self) -> list[T]:
        """Every waiting item (at least one, at most `limit`), in the order put."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        items, self._items = self._items[: self.limit], self._items[self.limit :]
        if not self._items:
            self._ready.clear()
        self._space.set()
        return items


async def project_batches(
    batcher: Batcher[tuple[R, Callable[[], Awaitable[Any]]]],
    project: Callable[[list[R]], Awaitable[Any]],
    done: Callable[[Sequence[R]], None] | None = None,
) -> None:
    """Forever: take a batch of (record, ack), `project` it (returns once committed), then
    ack each record in order, then `done` (metrics). A failed `project` raises before any
    ack: the records are redelivered."""
    while True:
        items = await batcher.take()
        records = [record for record, _ in items]
        await project(records)
        for _, ack in items:
            await ack()
        if done is not None:
            done(records)
