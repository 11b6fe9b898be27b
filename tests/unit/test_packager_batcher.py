"""The live packager's group commit (conn_packager.batching.Batcher), without I/O: a
record put while the projection is idle is taken at once, alone; records put while it is
busy are taken together, in order, at most `limit` at a time; a full batcher holds the
stream back until the projection takes."""

from __future__ import annotations

import asyncio

import pytest

from conn_packager.batching import Batcher


async def test_an_idle_projection_takes_the_first_record_alone_and_at_once() -> None:
    batcher: Batcher[int] = Batcher(10)
    taking = asyncio.create_task(batcher.take())
    await asyncio.sleep(0)  # the projection waits for work
    await batcher.put(1)
    assert await taking == [1]


async def test_records_put_meanwhile_are_taken_together_in_order_up_to_the_limit() -> None:
    batcher: Batcher[int] = Batcher(3)
    for i in range(3):
        await batcher.put(i)
    blocked = asyncio.create_task(batcher.put(3))
    await asyncio.sleep(0)
    assert not blocked.done(), "a full batcher holds the stream back"
    assert await batcher.take() == [0, 1, 2]
    await blocked
    assert await batcher.take() == [3]
    assert len(batcher) == 0


async def test_taking_waits_for_a_record() -> None:
    batcher: Batcher[int] = Batcher(2)
    taking = asyncio.create_task(batcher.take())
    await asyncio.sleep(0)
    assert not taking.done()
    await batcher.put(7)
    await batcher.put(8)
    assert await taking in ([7], [7, 8])


def test_a_batch_holds_at_least_one_record() -> None:
    with pytest.raises(ValueError):
        Batcher(0)
