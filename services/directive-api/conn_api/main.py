"""Entry point: `conn-directive-api` / `python -m conn_api` (uvicorn, one worker).

The process runs on uvloop. `serve` makes the event loop itself (`asyncio.run`) and
uvicorn only serves inside it, so uvicorn's `loop="auto"` never picks uvloop there
(until this, the API ran on asyncio's pure-Python selector loop although uvloop was
pinned for it): the policy is set before `serve`. Measured under the intake load
(bench/intake.py quick, same runs alternated): about 10% less CPU per directive."""

from __future__ import annotations

import asyncio

import uvloop

from conn_api.config import Settings
from conn_runtime.service import AsgiService, serve


def build() -> AsgiService:
    settings = Settings()
    from conn_api.app import create_app

    return AsgiService(
        create_app(settings), host=settings.api.conn_api_host, port=settings.api.conn_api_port
    )


def use_uvloop() -> None:
    """Every event loop `asyncio.run` makes from now on in this process is uvloop's."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run() -> None:
    use_uvloop()
    serve("directive-api", build)


if __name__ == "__main__":
    run()
