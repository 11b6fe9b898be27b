"""A bound on the size of an HTTP request's head (request line and headers).

uvicorn's httptools protocol has none: a client could send megabytes of headers, and
every byte is buffered before the application (and its body limit) sees the request.
`BoundedHttpTools` counts the bytes of a head as they arrive and, past
`CONN_HTTP_MAX_HEAD_BYTES` (default 64 KiB; at most one read more is buffered), answers
**431** with the API's error shape and closes the connection, without parsing on.
"""

from __future__ import annotations

import json
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEAD_BYTES = 64 * 1024


def max_head_bytes() -> int:
    return int(os.environ.get("CONN_HTTP_MAX_HEAD_BYTES", DEFAULT_MAX_HEAD_BYTES))


def too_large_answer(limit: int) -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "headers_too_large",
                "message": f"request line and headers larger than {limit} bytes",
                "detail": {"limit_bytes": limit},
            }
        }
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request head."""

    limit = DEFAULT_MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head:  # the head goes on past this read
            self._head_bytes += len(data)
            if self._head_bytes > self.limit:
                self._refused = True
                self.logger.warning("request head over %d bytes: 431", self.limit)
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(too_large_answer(self.limit))
                    self.transport.close()


def bounded_protocol(limit: int | None = None) -> type[BoundedHttpTools]:
    """The protocol class with its limit (CONN_HTTP_MAX_HEAD_BYTES unless given)."""
    return type("BoundedHttpTools", (BoundedHttpTools,), {"limit": limit or max_head_bytes()})
