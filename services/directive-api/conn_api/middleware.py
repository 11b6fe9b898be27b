"""Pure ASGI middleware on the hot path: request metrics and load shedding.

Pure ASGI (no `@app.middleware("http")`, whose BaseHTTPMiddleware wraps every request
in a task and memory streams), so the cost per request is a few attribute reads.

`RequestMetrics` observes `conn_api_request_seconds{method, route, status}` (a request
that raises counts as 500).

`LoadShed` bounds the API's work: at most `Capacity.limit` requests under `/v1/` are in flight
at once; one more is answered at once `503 overloaded` with `Retry-After`, before its
body is read, instead of queueing behind the others until every answer takes seconds.
Nothing of a shed request was done, so a client may always retry it (the CLI does,
bounded). Never shed: the ops endpoints (outside /v1/) and the stops (`POST
/v1/kill-switch/engage`, `POST /v1/incidents/{id}/hold`): stopping matters most when
the system is overloaded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conn_api import metrics
from conn_api.errors import error_body

SHED_PREFIX = "/v1/"


def is_stop(method: str, path: str) -> bool:
    """The stop verbs: never shed."""
    if method != "POST":
        return False
    return path == "/v1/kill-switch/engage" or (
        path.startswith("/v1/incidents/") and path.endswith("/hold")
    )


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
    """How many requests under /v1/ may be in flight at once, and how many are."""

    limit: int
    retry_after: int = 1
    in_flight: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("the in-flight limit must be at least 1")


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
        if cap.in_flight >= cap.limit:
            metrics.SHED.inc()
            await _shed(send, cap)
            return
        cap.in_flight += 1
        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            cap.in_flight -= 1
            metrics.IN_FLIGHT.dec()


async def _shed(send: Send, cap: Capacity) -> None:
    body = json.dumps(
        error_body(
            "overloaded",
            f"the API is at capacity ({cap.limit} requests in flight); nothing was done: "
            f"retry after {cap.retry_after} s",
            {"limit": cap.limit, "retry_after_seconds": cap.retry_after},
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
