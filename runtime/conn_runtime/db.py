"""PostgreSQL access shared by the services (asyncpg)."""

from __future__ import annotations

import asyncpg


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
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
