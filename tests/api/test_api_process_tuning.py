"""How the directive API process is set up to run (issue 17, Build 4): its heap frozen
once the fold has caught up. (uvloop and the collector's thresholds come with `serve`,
like every service's: tests/unit/test_serve.py.)"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from conn_api import main, runtime


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
