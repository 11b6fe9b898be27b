"""Group commit for the live packager: the stream hands records over one at a time, the
projection takes everything handed over since it last looked, as one batch.

`Batcher.put` returns at once unless `limit` items are already waiting (back-pressure:
the stream then waits for the projection); `Batcher.take` waits for the first item and
returns all waiting ones. While the projection is idle a record is taken as soon as it
is put (no added latency); while it is busy with one batch, the next one accumulates.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


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
