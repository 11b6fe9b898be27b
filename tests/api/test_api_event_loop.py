"""The directive API process runs on uvloop (issue 17, Build 4).

`serve` makes the event loop itself (`asyncio.run`) and uvicorn only serves inside it,
so uvicorn's `loop="auto"` never picks uvloop there: the API's entry point has to set
the policy. This runs the entry point with `serve` replaced by one that makes its loop
the same way and reports which loop it got."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
import uvloop

from conn_api import main


@pytest.fixture
def restored_policy() -> Iterator[None]:
    policy = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(policy)


def test_the_api_entry_point_serves_on_uvloop(
    monkeypatch: pytest.MonkeyPatch, restored_policy: None
) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    def serve(name: str, build: Callable[[], object]) -> None:
        async def probe() -> None:
            seen.append(asyncio.get_running_loop())

        asyncio.run(probe())  # as conn_runtime.service.serve makes its loop
        assert name == "directive-api" and build is main.build

    monkeypatch.setattr(main, "serve", serve)
    main.run()
    (loop,) = seen
    assert isinstance(loop, uvloop.Loop), type(loop)
