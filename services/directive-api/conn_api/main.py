"""Entry point: `conn-directive-api` / `python -m conn_api` (uvicorn, one worker).

The process runs on uvloop. `serve` makes the event loop itself (`asyncio.run`) and
uvicorn only serves inside it, so uvicorn's `loop="auto"` never picks uvloop there
(until this, the API ran on asyncio's pure-Python selector loop although uvloop was
pinned for it): the policy is set before `serve`. Measured under the intake load
(bench/intake.py quick, same runs alternated): about 10% less CPU per directive."""

from __future__ import annotations

import asyncio
import gc

import uvloop

from conn_api.config import Settings
from conn_runtime.service import AsgiService, serve

GC_THRESHOLDS = (10_000, 20, 10)
"""The cyclic collector's thresholds in the API process (Python's default: 700, 10, 10).
With the default, every few hundred allocations a young collection promoted whatever
the ~32 requests in flight held, and the older generation filled with such objects, so
full collections (each walking the whole heap) ran several times a second under intake
load: ~20% of the API's CPU. Reference counting frees almost everything a request
makes; the collector is for cycles, and 10,000 allocations between young collections
bounds what waits for it."""


def build() -> AsgiService:
    settings = Settings()
    from conn_api.app import create_app

    return AsgiService(
        create_app(settings, settle_heap=True),
        host=settings.api.conn_api_host,
        port=settings.api.conn_api_port,
    )


def use_uvloop() -> None:
    """Every event loop `asyncio.run` makes from now on in this process is uvloop's."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def run() -> None:
    use_uvloop()
    tune_gc()
    serve("directive-api", build)


if __name__ == "__main__":
    run()
