"""The API's edge without a stack: the request-body limit (a pure ASGI middleware, in
front of every route), and the production-by-default settings check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from conn_api.limits import BodyLimit

LIMIT = 1024


class Recorder:
    """An ASGI app that reads the whole body and echoes its length."""

    def __init__(self) -> None:
        self.called = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called += 1
        size = 0
        while True:
            message: Message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def client(app: Recorder) -> httpx.AsyncClient:
    limited = BodyLimit(app, default=LIMIT, prefixes=[("/v1/alerts/", 4 * LIMIT)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://t")


async def test_declared_length_over_the_limit_is_413_before_the_app_runs() -> None:
    app = Recorder()
    async with client(app) as c:
        r = await c.post("/v1/incidents", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "too_large"
    assert error["detail"]["limit_bytes"] == LIMIT
    assert app.called == 0


async def test_streamed_body_is_counted_and_cut_at_the_limit() -> None:
    app = Recorder()
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):  # 100 KiB, no Content-Length (chunked)
            sent += 1
            yield b"y" * 1024

    async with client(app) as c:
        r = await c.post("/console/anything", content=chunks())
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_large"
    assert app.called == 0


async def test_bodies_within_the_limit_reach_the_app_unchanged() -> None:
    app = Recorder()
    async with client(app) as c:
        exact = await c.post("/v1/incidents", content=b"z" * LIMIT)

        async def two() -> AsyncIterator[bytes]:
            yield b"a" * 500
            yield b"b" * 500

        streamed = await c.post("/v1/incidents", content=two())
        alerts = await c.post("/v1/alerts/alertmanager", content=b"a" * (3 * LIMIT))
        too_big_alert = await c.post("/v1/alerts/pagerduty", content=b"a" * (4 * LIMIT + 1))
    assert (exact.status_code, exact.text) == (200, str(LIMIT))
    assert (streamed.status_code, streamed.text) == (200, "1000")
    assert (alerts.status_code, alerts.text) == (200, str(3 * LIMIT))
    assert too_big_alert.status_code == 413


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1e9", b"99999999999999999999999"])
async def test_a_malformed_content_length_is_400(value: bytes) -> None:
    app = Recorder()
    limited = BodyLimit(app, default=LIMIT)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/incidents",
        "headers": [(b"content-length", value)],
    }
    await limited(scope, receive, send)
    assert sent[0]["status"] == 400
    assert app.called == 0


# --- authority YAML ---------------------------------------------------------------------

BILLION_LAUGHS = b"""
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
name: laughs
"""


def test_authority_yaml_with_aliases_is_refused_before_expansion() -> None:
    from conn_core.authority import AuthorityFileError, parse_authority

    with pytest.raises(AuthorityFileError, match="aliases are not allowed"):
        parse_authority(BILLION_LAUGHS, holder="alice")
    with pytest.raises(AuthorityFileError, match="aliases are not allowed"):
        parse_authority(b"base: &x {a: 1}\nother: *x\n")


def test_authority_yaml_over_the_size_limit_is_refused_unparsed() -> None:
    from conn_core.authority import MAX_AUTHORITY_BYTES, AuthorityFileError, parse_authority

    with pytest.raises(AuthorityFileError, match="larger than"):
        parse_authority(b"#" * (MAX_AUTHORITY_BYTES + 1))


def test_the_shipped_runbook_still_parses() -> None:
    from pathlib import Path

    from conn_core.authority import parse_authority

    root = Path(__file__).resolve().parents[2]
    boundary, _ = parse_authority((root / "runbooks" / "checkout-authority.yaml").read_bytes())
    assert boundary.name
