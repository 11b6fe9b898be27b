"""The FastAPI application: lifespan (runtime), error handlers, ops endpoints,
request metrics, and the OpenAPI document (with the DirectiveRequest schema)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

from conn_api import alerts, console, metrics, routes
from conn_api.auth import Authenticator
from conn_api.config import Settings
from conn_api.errors import ErrorResponse, error_body, install_handlers
from conn_api.models import DirectiveRequest
from conn_api.runtime import Runtime
from conn_runtime.db import database_ready
from conn_runtime.ops import kafka_ready

DESCRIPTION = """Conn's directive API: the commander directs one bounded step at a time.

Authenticate with `Authorization: Bearer <token>`. Every error has the shape
`{"error": {"code", "message", "detail"}}`; refused directives carry a
RefusalReason `code` and are recorded in the log as DirectiveRefused.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    auth = Authenticator.from_settings(settings.api)  # ConfigError here, before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings, auth)
        try:
            await rt.start()
        except BaseException:
            await rt.stop()
            raise
        app.state.runtime = rt
        try:
            yield
        finally:
            app.state.runtime = None
            await rt.stop()

    app = FastAPI(
        title="Conn directive API", version="1.0.0", description=DESCRIPTION, lifespan=lifespan
    )
    install_handlers(app)
    app.include_router(routes.router)
    app.include_router(alerts.router)
    console.mount(app)  # the bridge console under /console (conn_api.console)

    @app.middleware("http")
    async def _timing(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.REQUEST_SECONDS.labels(request.method, path, str(status)).observe(
                time.perf_counter() - started
            )

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={503: {"model": ErrorResponse, "description": "Not ready"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        checks: dict[str, bool] = {"kafka": False, "postgres": False, "fold": False}
        if rt is not None:
            try:
                checks["kafka"] = await asyncio.wait_for(
                    kafka_ready(settings.kafka.kafka_bootstrap_servers), 2
                )
            except Exception:  # noqa: BLE001 - a failing probe is "not ready"
                checks["kafka"] = False
            try:
                checks["postgres"] = await asyncio.wait_for(database_ready(rt.db), 2)
            except Exception:  # noqa: BLE001
                checks["postgres"] = False
            checks["fold"] = rt.view.caught_up.is_set() and rt.view.running
        ready = all(checks.values())
        if ready:
            return JSONResponse({"status": "ready", "checks": checks})
        return JSONResponse(
            error_body("unavailable", "not ready", {"checks": checks}), status_code=503
        )

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        directive = TypeAdapter(DirectiveRequest).json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(directive.pop("$defs", {}))
        components["DirectiveRequest"] = directive
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
