"""How the directive API process is set up to run (issue 17, Build 4): on uvloop, with
the cyclic garbage collector's thresholds raised, and its heap frozen once the fold has
caught up.

`serve` makes the event loop itself (`asyncio.run`) and uvicorn only serves inside it,
so uvicorn's `loop="auto"` never picks uvloop there: the API's entry point has to set
the policy. These run the entry point with `serve` replaced by one that makes its loop
the same way and reports what it got."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop

from conn_api import main, runtime


@pytest.fixture
def restored_process_state() -> Iterator[None]:
    policy, thresholds = asyncio.get_event_loop_policy(), gc.get_threshold()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(policy)
        gc.set_threshold(*thresholds)


def test_the_api_entry_point_serves_on_uvloop_with_the_gc_tuned(
    monkeypatch: pytest.MonkeyPatch, restored_process_state: None
) -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, tuple[int, int, int]]] = []

    def serve(name: str, build: Callable[[], object]) -> None:
        async def probe() -> None:
            seen.append((asyncio.get_running_loop(), gc.get_threshold()))

        asyncio.run(probe())  # as conn_runtime.service.serve makes its loop
        assert name == "directive-api" and build is main.build

    monkeypatch.setattr(main, "serve", serve)
    main.run()
    ((loop, thresholds),) = seen
    assert isinstance(loop, uvloop.Loop), type(loop)
    assert thresholds == main.GC_THRESHOLDS


def test_the_process_app_settles_its_heap_once_caught_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry point's app asks for it; an app made without asking (inside a test
    process) does not."""
    made: list[dict[str, Any]] = []

    def create_app(settings: object, **kw: Any) -> object:
        made.append(kw)
        return object()

    monkeypatch.setattr("conn_api.app.create_app", create_app)
    settings = main.Settings.model_construct(api=_Api())
    monkeypatch.setattr(main, "Settings", lambda: settings)
    main.build()
    assert made == [{"settle_heap": True}]


class _Api:
    conn_api_host = "127.0.0.1"
    conn_api_port = 0


def test_settle_heap_collects_cyclic_garbage_then_freezes_what_is_alive() -> None:
    class Node:
        other: Any = None

    cycle_a, cycle_b = Node(), Node()
    cycle_a.other, cycle_b.other = cycle_b, cycle_a
    garbage = weakref.ref(cycle_a)
    del cycle_a, cycle_b  # garbage only the collector can free
    kept = Node()
    kept.other = [kept]
    try:
        runtime.settle_heap()
        assert garbage() is None  # collected, not frozen
        assert gc.get_freeze_count() > 0
        # Frozen: in no generation a collection walks any more.
        assert not any(o is kept for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())
