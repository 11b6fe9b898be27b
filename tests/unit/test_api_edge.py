"""The API's edge without a stack: the request-body limit (a pure ASGI middleware, in
front of every route), and the production-by-default settings check."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import pytest
from starlette.types import Message, Receive, Scope, Send

from conn_api.limits import BodyLimit

LIMIT = 1024
ROOT = Path(__file__).resolve().parents[2]


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


# --- production by default ---------------------------------------------------------------


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a deployment that set nothing (the test session sets
    CONN_ENV=development for every other test)."""
    for name in (
        "CONN_ENV",
        "CONN_PAGERDUTY_WEBHOOK_SECRET",
        "CONN_API_TOKENS_FILE",
        "CONN_API_TOKENS",
        "DATABASE_URL",
        "CONN_SIGNING_KEY_FILE",
        "CONN_KEYRING_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_api_defaults_to_production_and_refuses_a_missing_webhook_secret(
    production_env: None,
) -> None:
    from pydantic import ValidationError

    from conn_api.config import ApiSettings

    with pytest.raises(ValidationError, match="CONN_PAGERDUTY_WEBHOOK_SECRET is not set"):
        ApiSettings(conn_api_tokens='[{"identity": "x"}]')


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"conn_pagerduty_webhook_secret": "conn-dev-pagerduty-secret"}, "public development"),
        ({"conn_pagerduty_webhook_secret": "changeme"}, "placeholder"),
        ({"conn_api_tokens": None}, "no credentials configured"),
    ],
)
def test_production_refuses_development_secrets(
    production_env: None, overrides: dict[str, Any], refusal: str
) -> None:
    from pydantic import ValidationError

    from conn_api.config import ApiSettings

    values: dict[str, Any] = {
        "conn_pagerduty_webhook_secret": "a-real-secret-from-a-vault",
        "conn_api_tokens": "[]",
        **overrides,
    }
    with pytest.raises(ValidationError, match=refusal):
        ApiSettings(**values)
    # The same configuration is accepted only with the explicit development flag.
    ApiSettings(**{**values, "conn_env": "development"})


def test_production_accepts_real_secrets(production_env: None) -> None:
    from conn_api.config import ApiSettings

    settings = ApiSettings(conn_pagerduty_webhook_secret="s3cr3t-from-vault", conn_api_tokens="[]")
    assert settings.conn_env == "production"
    assert settings.tokens_path() is None


def test_production_refuses_the_development_tokens_file(production_env: None) -> None:
    from conn_api.auth import Authenticator
    from conn_api.config import DEV_TOKENS_FILE, ApiSettings, ConfigError

    settings = ApiSettings(
        conn_pagerduty_webhook_secret="s3cr3t-from-vault", conn_api_tokens_file=DEV_TOKENS_FILE
    )
    with pytest.raises(ConfigError, match="development-only"):
        Authenticator.from_settings(settings)


def test_development_gets_the_development_webhook_secret(production_env: None) -> None:
    from conn_api.config import DEV_PAGERDUTY_SECRET, ApiSettings

    settings = ApiSettings(conn_env="development")
    assert settings.conn_pagerduty_webhook_secret == DEV_PAGERDUTY_SECRET


def test_every_service_refuses_development_keys_and_the_default_database(
    production_env: None, tmp_path: Path
) -> None:
    from pydantic import ValidationError

    from conn_runtime.settings import DatabaseSettings, KafkaSettings

    dev_key = tmp_path / ".local" / "trust" / "keys" / "executor.pem"
    with pytest.raises(ValidationError, match="development trust material"):
        KafkaSettings(conn_signing_key_file=dev_key)
    with pytest.raises(ValidationError, match="DATABASE_URL is not set"):
        DatabaseSettings()
    KafkaSettings(conn_signing_key_file=tmp_path / "keys" / "executor.pem")
    DatabaseSettings(database_url="postgresql://conn:real@db:5432/conn")
    KafkaSettings(conn_signing_key_file=dev_key, conn_env="development")
    DatabaseSettings(conn_env="development")


@pytest.mark.parametrize("module", ["conn_api", "conn_executor", "conn_verifier", "conn_packager"])
def test_a_service_without_the_development_flag_exits_with_the_reason(
    module: str, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CONN_SIGNING_KEY_FILE": str(tmp_path / ".local" / "trust" / "keys" / "x.pem"),
        "CONN_API_TOKENS_FILE": str(ROOT / "deploy" / "local" / "tokens.yaml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-1500:])
    assert "CONN_ENV=production" in done.stderr, done.stderr[-1500:]


# --- the limit as a property ---------------------------------------------------------------


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    chunks=st.lists(st.binary(max_size=700), max_size=12),
    limit=st.integers(min_value=0, max_value=4000),
    declare=st.booleans(),
)
async def test_the_app_sees_exactly_the_body_iff_it_is_within_the_limit(
    chunks: list[bytes], limit: int, declare: bool
) -> None:
    """However a body is split (or declared), the application sees it byte for byte
    when it is within the limit, and never runs when it is not (413)."""
    seen: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    total = b"".join(chunks)
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-length", str(len(total)).encode())] if declare else []
    scope = {"type": "http", "method": "POST", "path": "/v1/x", "headers": headers}
    await BodyLimit(app, default=limit)(scope, receive, send)
    if len(total) <= limit:
        assert seen == [total]
        assert sent[0]["status"] == 204
    else:
        assert seen == []
        assert sent[0]["status"] == 413
