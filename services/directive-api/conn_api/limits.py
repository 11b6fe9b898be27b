"""Request-body size limit, enforced before anything parses the body.

A pure ASGI middleware (so it sees every route: authenticated or not, the alert
webhooks, the console): a declared `Content-Length` over the limit is answered 413
at once, without reading the body; a chunked or undeclared body is read and counted
chunk by chunk and answered 413 as soon as it passes the limit. A body within the
limit is handed to the application unchanged (buffered: at most the limit in memory).

Limits (ApiSettings): CONN_API_MAX_BODY_BYTES (default 64 KiB) for every route, and
CONN_API_MAX_ALERT_BODY_BYTES (default 1 MiB) under /v1/alerts/ (an Alertmanager
group notification carries every alert of the group).

A JSON body (any `application/...json` content type) with a duplicate key in any object
is answered 422 before the application sees it: parsers disagree about which of the two
counts (the last here, the first elsewhere), so a proxy, a log and the API would read
different requests. A body that is not valid JSON is left to the route (its usual 422).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conn_api.errors import error_body
from conn_schemas.codec import duplicate_key


class BodyLimit:
    """`BodyLimit(app, default=..., prefixes=[("/v1/alerts/", 1 MiB)])`."""

    def __init__(
        self, app: ASGIApp, *, default: int, prefixes: Sequence[tuple[str, int]] = ()
    ) -> None:
        self.app = app
        self.default = default
        self.prefixes = sorted(prefixes, key=lambda p: len(p[0]), reverse=True)

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.prefixes:
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        declared: list[bytes] = [
            value for name, value in scope.get("headers", ()) if name.lower() == b"content-length"
        ]
        if declared:
            text = declared[0].strip()
            if len(declared) > 1 or not text.isdigit() or len(text) > 19:
                await _answer(send, 400, "invalid_request", "invalid Content-Length header", None)
                return
            if int(text) > limit:
                await _too_large(send, limit, int(text))
                return
        # Read (and count) the body before the application sees any of it.
        messages: list[Message] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # e.g. http.disconnect
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _too_large(send, limit, None)
                return
            messages.append(message)
            more = bool(message.get("more_body", False))

        if _is_json(scope):
            duplicate = duplicate_key(b"".join(m.get("body", b"") for m in messages))
            if duplicate is not None:
                await _answer(
                    send,
                    422,
                    "invalid_request",
                    f"duplicate key {duplicate[:100]!r} in the JSON body",
                    {"duplicate_key": duplicate[:100]},
                )
                return

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return bool(media.startswith(b"application/") and media.endswith(b"json"))
    return False


async def _too_large(send: Send, limit: int, declared: int | None) -> None:
    detail: dict[str, Any] = {"limit_bytes": limit}
    if declared is not None:
        detail["content_length"] = declared
    await _answer(
        send, 413, "too_large", f"request body larger than {limit} bytes", detail, close=True
    )


async def _answer(
    send: Send, status: int, code: str, message: str, detail: Any, *, close: bool = False
) -> None:
    body = json.dumps(error_body(code, message, detail)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:  # the rest of the body is not read: do not reuse the connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
