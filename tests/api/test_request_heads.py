"""Request heads are bounded too (issue 14, size): uvicorn's httptools parser buffers
any amount of header bytes before the application — and its body limit — sees the
request. Against the API as a real process: a head over the bound (64 KiB) is answered
431 in the API's error shape and the connection closed, without waiting for the rest;
a head within it is served; the server goes on serving."""

from __future__ import annotations

import socket

import httpx
from api_support import auth
from fixtures_services import Proc


def _send(port: int, head: bytes, chunks: int = 0, chunk: bytes = b"") -> bytes:
    """Send `head`, then `chunks` more pieces of header (never finishing the head unless
    the server stops reading first), and return what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            for _ in range(chunks):
                s.sendall(chunk)
        except OSError:  # the server closed the connection: it answered
            pass
        out = b""
        try:
            while data := s.recv(65536):
                out += data
        except OSError:
            pass
    return out


def test_a_head_over_the_bound_is_431_and_the_server_goes_on(api_process: Proc) -> None:
    base = api_process.url
    port = int(base.rsplit(":", 1)[1].strip("/"))
    start = b"POST /v1/incidents HTTP/1.1\r\nHost: x\r\nX-Pad: "
    # 20 MB of one header value, sent in 64 KiB pieces: the answer comes long before.
    answer = _send(port, start, chunks=320, chunk=b"a" * 65536)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code": "headers_too_large"' in answer, answer[:400]
    # Many headers, each small, add up the same way.
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))
    answer = _send(port, b"GET /v1/me HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # Within the bound: served as before.
    r = httpx.get(base + "/v1/me", headers={**auth("alice"), "X-Pad": "a" * 32_000})
    assert r.status_code == 200, r.text
    r = httpx.post(
        base + "/v1/incidents",
        json={"title": "t", "service": "checkout"},
        headers=auth("alice"),
    )
    assert r.status_code == 201, r.text
