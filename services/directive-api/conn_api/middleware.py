"""Pure ASGI middleware on the hot path: request metrics and load shedding.

Pure ASGI (no `@app.middleware("http")`, whose BaseHTTPMiddleware wraps every request
in a task and memory streams), so the cost per request is a few attribute reads.

`RequestMetrics` observes `conn_api_request_seconds{method, route, status}` (a request
that raises counts as 500).

`LoadShed` bounds the API's work: at most `Capacity.limit` requests under `/v1/` are in flight
at once; one more is answered at once `503 overloaded` with `Retry-After`, before its
body is read, instead of queueing behind the others until every answer takes seconds.
The in-flight count only sees requests the server has already parsed: requests that
wait *before* the app (in connection buffers, behind a saturated event loop) are
invisible to it. So the API also sheds while its event loop lags (`watch_loop_lag`:
the sustained lag, the least overshoot of the last few periodic wake-ups, above
`Capacity.max_loop_lag`): then whatever reaches the app has already waited that long,
and answering it 503 at once is what drains the queue instead of deepening it.
`shed_reason` is the pure decision. Nothing of a shed request was done, so a client
may always retry it (the CLI does, bounded). Never shed: the ops endpoints (outside
/v1/) and the stops (`POST /v1/kill-switch/engage`, `POST /v1/incidents/{id}/hold`,
`.../close`, `.../takeover`): stopping matters most when the system is overloaded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conn_api import metrics
from conn_api.errors import error_body

SHED_PREFIX = "/v1/"
STOP_SUFFIXES = ("/hold", "/close", "/takeover")
LAG_INTERVAL_SECONDS = 0.05
LAG_WINDOW = 4
"""The loop lag is sampled every 50 ms; the sustained lag is the least of the last 4
samples (a single slow callback or GC pause does not shed; a saturated loop does)."""


def is_stop(method: str, path: str) -> bool:
    """The stop verbs: never shed."""
    if method != "POST":
        return False
    return path == "/v1/kill-switch/engage" or (
        path.startswith("/v1/incidents/") and path.endswith(STOP_SUFFIXES)
    )


def shed_reason(
    *, in_flight: int, limit: int, loop_lag: float, max_loop_lag: float | None
) -> str | None:
    """Why a request (not a stop) is shed now, or None: taken. Pure."""
    if in_flight >= limit:
        return "in_flight"
    if max_loop_lag is not None and loop_lag > max_loop_lag:
        return "loop_lag"
    return None


def sustained_lag(samples: Iterable[float]) -> float:
    """The lag every recent wake-up suffered (the least of them; 0 without samples)."""
    return max(0.0, min(samples, default=0.0))


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            status = 500
            raise
        finally:
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)


@dataclass
class Capacity:
    """How many requests under /v1/ may be in flight at once, and how many are; how
    much event-loop lag is tolerated (None: not shed on lag), and the lag now."""

    limit: int
    retry_after: int = 1
    in_flight: int = 0
    max_loop_lag: float | None = None
    loop_lag: float = 0.0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        if self.max_loop_lag is not None and self.max_loop_lag <= 0:
            raise ValueError("the loop-lag limit must be positive (or None)")


async def watch_loop_lag(
    cap: Capacity, interval: float = LAG_INTERVAL_SECONDS, window: int = LAG_WINDOW
) -> None:
    """Keep `cap.loop_lag` current until cancelled (one cheap wake-up per interval)."""
    loop = asyncio.get_running_loop()
    samples: deque[float] = deque(maxlen=window)
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        samples.append(loop.time() - before - interval)
        cap.loop_lag = sustained_lag(samples)
        metrics.LOOP_LAG.set(cap.loop_lag)


class LoadShed:
    """`LoadShed(app, capacity=Capacity(limit=64, retry_after=1))`."""

    def __init__(self, app: ASGIApp, *, capacity: Capacity) -> None:
        self.app = app
        self.capacity = capacity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(SHED_PREFIX) or is_stop(scope["method"], path):
            await self.app(scope, receive, send)
            return
        cap = self.capacity
        reason = shed_reason(
            in_flight=cap.in_flight,
            limit=cap.limit,
            loop_lag=cap.loop_lag,
            max_loop_lag=cap.max_loop_lag,
        )
        if reason is not None:
            metrics.SHED.inc()
            metrics.SHED_BY.labels(reason).inc()
            await _shed(send, cap, reason)
            return
        cap.in_flight += 1
        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            cap.in_flight -= 1
            metrics.IN_FLIGHT.dec()


async def _shed(send: Send, cap: Capacity, reason: str) -> None:
    if reason == "loop_lag":
        why = f"the API is saturated (its requests wait {cap.loop_lag * 1000:.0f} ms to run)"
    else:
        why = f"the API is at capacity ({cap.limit} requests in flight)"
    body = json.dumps(
        error_body(
            "overloaded",
            f"{why}; nothing was done: retry after {cap.retry_after} s",
            {
                "reason": reason,
                "limit": cap.limit,
                "loop_lag_ms": round(cap.loop_lag * 1000, 1),
                "retry_after_seconds": cap.retry_after,
            },
        )
    ).encode()
    # An unread body is discarded by the server; the connection stays usable.
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(cap.retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
