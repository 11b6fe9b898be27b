"""PostgreSQL access shared by the services (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson


async def json_codecs(conn: asyncpg.Connection) -> None:
    """jsonb/json as Python objects (orjson) instead of text, on this connection."""
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A release without asyncpg's reset query (see `create_pool(reset_session=False)`).
    asyncpg still rolls back a transaction left open and drops listeners first."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float = 30,
    json: bool = False,
    reset_session: bool = True,
) -> asyncpg.Pool:
    """The services' pool. `json=True`: jsonb/json come back as Python objects
    (`json_codecs`), as the read model's writers and readers expect.

    `reset_session=False`: a connection goes back to the pool without asyncpg's reset
    query (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), one round trip
    saved per statement. Only for a pool whose users never leave session state behind:
    no SET, LISTEN, cursor outside a transaction or session-level advisory lock
    (`apply_schema` takes a transaction-level one)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        init=json_codecs if json else None,
        reset=None if reset_session else _keep_session,
    )
    assert pool is not None
    return pool


async def apply_schema(pool: asyncpg.Pool, ddl: str, *, lock_key: int) -> None:
    """Run idempotent DDL (CREATE ... IF NOT EXISTS) under an advisory lock so
    several instances starting together do not race each other."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(ddl)


async def database_ready(pool: asyncpg.Pool) -> bool:
    async with pool.acquire(timeout=1.5) as conn:
        return bool(await conn.fetchval("SELECT 1"))


def postgres_probe(
    dsn: str, pool: Callable[[], asyncpg.Pool | None]
) -> Callable[[], Awaitable[bool]]:
    """A readiness probe for `Dependencies`: `SELECT 1` through the service's pool once
    it exists, through a short-lived connection while it does not (start-up)."""

    async def probe() -> bool:
        current = pool()
        if current is not None:
            return await database_ready(current)
        conn = await asyncpg.connect(dsn, timeout=1.5)
        try:
            return bool(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    return probe


def with_database(dsn: str, name: str) -> str:
    """The same DSN pointing at database `name`."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def temporary_database(dsn: str, *, prefix: str) -> AsyncIterator[str]:
    """A new empty database on the server of `dsn` (named `<prefix>_<random>`);
    yields its DSN and drops it (forcing connections off) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(dsn, name)
    finally:
        await _drop_database(dsn, name)


async def _drop_database(dsn: str, name: str, *, attempts: int = 20) -> None:
    """DROP DATABASE, forcing connections off. PostgreSQL 15 refuses `WITH (FORCE)` to a
    non-superuser while an autovacuum worker is in the database ("must be a member of
    the role whose process is being terminated": the worker has no role); a plain DROP
    makes autovacuum give way, so that is tried next, and both again shortly after if
    another session is still connected."""
    conn = await asyncpg.connect(dsn)
    try:
        for attempt in range(attempts):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except asyncpg.InsufficientPrivilegeError:
                pass  # an autovacuum worker is in it: a plain DROP makes it give way
            else:
                return
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            except asyncpg.ObjectInUseError:
                if attempt == attempts - 1:
                    raise
            else:
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
