"""The intake baseline: a minimal FastAPI endpoint that only validates the same directive
body as the directive API (conn_api.models.DirectiveRequest) and inserts its
Idempotency-Key into PostgreSQL - no auth, no fold, no Kafka.

    python -m bench.minimal_app --port 18999 --dsn postgresql://conn:conn@127.0.0.1:15432/conn
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
import uvicorn
from fastapi import FastAPI, Header, Path
from fastapi.responses import JSONResponse

from conn_api.models import DirectiveRequest

DDL = """CREATE TABLE IF NOT EXISTS bench_minimal_keys (
    key         text PRIMARY KEY,
    incident_id text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
)"""


def create_app(dsn: str) -> FastAPI:
    state: dict[str, asyncpg.Pool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        assert pool is not None
        await pool.execute(DDL)
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": "pool" in state}

    @app.post("/v1/incidents/{incident_id}/directives", status_code=202)
    async def direct(
        incident_id: Annotated[str, Path(max_length=128)],
        body: DirectiveRequest,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=200)],
    ) -> JSONResponse:
        inserted = await state["pool"].fetchval(
            "INSERT INTO bench_minimal_keys (key, incident_id) VALUES ($1, $2) "
            "ON CONFLICT (key) DO NOTHING RETURNING 1",
            idempotency_key,
            incident_id,
        )
        return JSONResponse(
            {"status": "issued" if inserted else "replayed", "action": body.action.action},
            status_code=202,
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.minimal_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.dsn),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
