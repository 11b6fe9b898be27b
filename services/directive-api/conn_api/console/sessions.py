"""Browser sessions of the console, kept in PostgreSQL (so every API replica serves them
and a restart does not log the bridge out).

A browser cannot send `Authorization` on navigation, so the login page takes the same
credential the API takes (a bearer token from the tokens file, or a JWT), validates it
with the API's own `Authenticator`, and answers with an opaque, random session id in an
HttpOnly, SameSite=Strict cookie. What is stored:

- the SHA-256 of the session id (a leaked table holds no usable session);
- the identity the credential resolved to, and for an opaque token its SHA-256 (the
  same hash the tokens file holds): every request resolves the identity again through
  the authenticator, so a token removed from the configuration ends its sessions;
- a per-session CSRF token (checked on every POST), an expiry (at most
  CONN_CONSOLE_SESSION_SECONDS; never past a JWT's `exp`), and one flash message (the
  answer to the last control, shown once after the redirect).

Never the token itself.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import asyncpg
import jwt

from conn_api.auth import Authenticator, Identity, hash_token
from conn_runtime.db import apply_schema
from conn_schemas.values import Role

SCHEMA_LOCK_KEY = 0x434F4E4E434F  # "CONNCO"

DDL = """
CREATE TABLE IF NOT EXISTS conn_console_sessions (
    sid_sha256    text PRIMARY KEY,
    identity      jsonb NOT NULL,
    token_sha256  text,
    csrf          text NOT NULL,
    flash         jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS conn_console_sessions_expiry ON conn_console_sessions (expires_at);
"""


P = ParamSpec("P")
T = TypeVar("T")


class StoreUnavailable(Exception):
    """PostgreSQL did not answer: the console answers 503, never a stack trace."""


def _guarded(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"session store unavailable: {exc.__class__.__name__}") from exc

    return wrapper


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    sid: str
    identity: Identity
    csrf: str
    expires_at: datetime


def _identity_json(identity: Identity) -> str:
    return json.dumps(
        {
            "id": identity.id,
            "roles": [r.value for r in identity.roles],
            "team": identity.team,
            "kind": identity.kind,
            "via": identity.via,
        }
    )


def _identity_from(doc: Any) -> Identity:
    data = json.loads(doc) if isinstance(doc, str) else doc
    roles = tuple(Role(r) for r in data.get("roles", ()) if r in {x.value for x in Role})
    return Identity(
        str(data["id"]), roles, data.get("team"), data.get("kind", "human"), data.get("via", "")
    )


def jwt_expiry(token: str) -> datetime | None:
    """`exp` of a JWT the authenticator has already verified (read, not re-verified)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return datetime.fromtimestamp(float(exp), UTC) if isinstance(exp, int | float) else None


class SessionStore:
    def __init__(self, *, lifetime_seconds: int) -> None:
        self.lifetime = timedelta(seconds=lifetime_seconds)
        self._ready = False
        self._lock = asyncio.Lock()

    @_guarded
    async def _ensure(self, pool: asyncpg.Pool) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                await apply_schema(pool, DDL, lock_key=SCHEMA_LOCK_KEY)
                self._ready = True

    @_guarded
    async def create(
        self, pool: asyncpg.Pool, identity: Identity, *, token: str, now: datetime | None = None
    ) -> Session:
        """A new session for a credential the authenticator accepted."""
        await self._ensure(pool)
        now = now or datetime.now(UTC)
        expires = now + self.lifetime
        token_sha: str | None = None
        if identity.via == "jwt":
            exp = jwt_expiry(token)
            if exp is not None:
                expires = min(expires, exp)
        else:
            token_sha = hash_token(token)
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM conn_console_sessions WHERE expires_at < now()")
            await conn.execute(
                "INSERT INTO conn_console_sessions"
                " (sid_sha256, identity, token_sha256, csrf, expires_at)"
                " VALUES ($1, $2::jsonb, $3, $4, $5)",
                _sid_hash(sid),
                _identity_json(identity),
                token_sha,
                csrf,
                expires,
            )
        return Session(sid, identity, csrf, expires)

    @_guarded
    async def get(self, pool: asyncpg.Pool, sid: str | None, auth: Authenticator) -> Session | None:
        """The live session for this cookie value, with the identity resolved again."""
        if not sid or len(sid) > 128:
            return None
        await self._ensure(pool)
        row = await pool.fetchrow(
            "SELECT identity, token_sha256, csrf, expires_at FROM conn_console_sessions"
            " WHERE sid_sha256 = $1 AND expires_at > now()",
            _sid_hash(sid),
        )
        if row is None:
            return None
        if row["token_sha256"] is not None:
            identity = auth.by_hash.get(row["token_sha256"])
            if identity is None:  # the token is no longer configured
                await self.delete(pool, sid)
                return None
        else:
            identity = _identity_from(row["identity"])
        return Session(sid, identity, row["csrf"], row["expires_at"])

    @_guarded
    async def delete(self, pool: asyncpg.Pool, sid: str) -> None:
        await self._ensure(pool)
        await pool.execute(
            "DELETE FROM conn_console_sessions WHERE sid_sha256 = $1", _sid_hash(sid)
        )

    @_guarded
    async def set_flash(self, pool: asyncpg.Pool, sid: str, flash: dict[str, Any]) -> None:
        await pool.execute(
            "UPDATE conn_console_sessions SET flash = $2::jsonb WHERE sid_sha256 = $1",
            _sid_hash(sid),
            json.dumps(flash),
        )

    @_guarded
    async def pop_flash(self, pool: asyncpg.Pool, sid: str) -> dict[str, Any] | None:
        value = await pool.fetchval(
            "WITH old AS (SELECT flash FROM conn_console_sessions WHERE sid_sha256 = $1"
            " FOR UPDATE)"
            " UPDATE conn_console_sessions s SET flash = NULL FROM old"
            " WHERE s.sid_sha256 = $1 RETURNING old.flash",
            _sid_hash(sid),
        )
        if value is None:
            return None
        data = json.loads(value) if isinstance(value, str) else value
        return data if isinstance(data, dict) else None
