"""The FastAPI application: lifespan (runtime), error handlers, ops endpoints, pure
ASGI middleware (request metrics, load shedding, body limit), and the OpenAPI
document (with the DirectiveRequest schema)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

from conn_api import alerts, approvals, console, dryrun, fleet, routes
from conn_api.auth import Authenticator
from conn_api.config import Settings
from conn_api.errors import ErrorResponse, error_body, install_handlers
from conn_api.limits import BodyLimit
from conn_api.middleware import Capacity, LoadShed, RequestMetrics, watch_loop_lag
from conn_api.models import DirectiveRequest
from conn_api.responses import Live, Ready
from conn_api.runtime import Runtime
from conn_runtime.ops import RETRY_AFTER_SECONDS
from conn_runtime.resilience import KAFKA, POSTGRES, StopRequested
from conn_runtime.trust import signer_for
from conn_schemas.signing import SignerRole

log = logging.getLogger(__name__)

DESCRIPTION = """Conn's directive API: the commander directs one bounded step at a time.

Authenticate with `Authorization: Bearer <token>`. Every error has the shape
`{"error": {"code", "message", "detail"}}`; refused directives carry a
RefusalReason `code` and are recorded in the log as DirectiveRefused.
"""


def create_app(settings: Settings | None = None, *, settle_heap: bool = False) -> FastAPI:
    """The app. `settle_heap`: once the fold has caught up, freeze what the process holds
    out of the cyclic garbage collector's reach (`conn_api.runtime.settle_heap`; the
    process entry point asks for it, an app run inside a test process does not)."""
    settings = settings or Settings()
    auth = Authenticator.from_settings(settings.api)  # ConfigError here, before serving
    # TrustConfigError (a ValueError) here, before serving: no keyring, or no API key.
    signer_for(settings.kafka, expect_role=SignerRole.API)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Serve at once; connect in the background (retrying while Kafka or PostgreSQL
        # is away). Until then /readyz names what is missing and routes answer 503.
        rt = Runtime(settings, auth, settle_heap=settle_heap)
        app.state.starting = rt
        app.state.runtime = None
        stopping = asyncio.Event()

        async def bring_up() -> None:
            try:
                await rt.start(stopping=stopping)
            except StopRequested:
                return
            except Exception:
                log.exception("directive API could not start")
                raise
            app.state.runtime = rt

        starter = asyncio.create_task(bring_up(), name="directive-api-start")
        lag = asyncio.create_task(watch_loop_lag(app.state.capacity), name="loop-lag")
        app.state.loop_lag_watch = lag
        try:
            yield
        finally:
            lag.cancel()
            stopping.set()
            app.state.runtime = None
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(starter, 10)
            await rt.stop()

    app = FastAPI(
        title="Conn directive API", version="1.0.0", description=DESCRIPTION, lifespan=lifespan
    )
    install_handlers(app)
    app.include_router(dryrun.router)
    app.include_router(routes.router)
    app.include_router(alerts.router)
    app.include_router(fleet.router)
    app.include_router(approvals.router)
    console.mount(app)  # the bridge console under /console (conn_api.console)
    # Before routing: no route (authenticated or not, console included) parses a body over it.
    app.add_middleware(
        BodyLimit,
        default=settings.api.conn_api_max_body_bytes,
        prefixes=[("/v1/alerts/", settings.api.conn_api_max_alert_body_bytes)],
    )
    # Outside the body limit: a shed request is answered before its body is read.
    app.state.capacity = Capacity(
        limit=settings.api.conn_api_max_in_flight,
        retry_after=settings.api.conn_api_shed_retry_after_seconds,
        max_loop_lag=settings.api.conn_api_max_loop_lag_seconds or None,
    )
    app.add_middleware(LoadShed, capacity=app.state.capacity)
    app.add_middleware(RequestMetrics)

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={
            200: {"model": Ready, "description": "Ready"},
            503: {"model": ErrorResponse, "description": "Not ready"},
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        rt: Runtime | None = getattr(request.app.state, "starting", None)
        checks: dict[str, bool] = {KAFKA: False, POSTGRES: False, "fold": False}
        missing = [KAFKA, POSTGRES]
        dependencies: dict[str, Any] = {}
        if rt is not None:
            checks[KAFKA] = rt.deps.available(KAFKA)
            checks[POSTGRES] = rt.deps.available(POSTGRES)
            checks["fold"] = rt.view.caught_up.is_set() and rt.view.running
            missing = rt.deps.missing()
            dependencies = rt.deps.as_json()
        ready = all(checks.values()) and request.app.state.runtime is not None
        if ready:
            return JSONResponse({"status": "ready", "checks": checks})
        detail = {"checks": checks, "missing": missing, "dependencies": dependencies}
        what = f"waiting for {', '.join(missing)}" if missing else "not ready"
        return JSONResponse(
            error_body("unavailable", what, detail),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.get(
        "/healthz",
        tags=["ops"],
        responses={
            200: {"model": Live, "description": "Alive"},
            503: {"model": ErrorResponse, "description": "Wedged"},
        },
    )
    async def healthz(request: Request) -> JSONResponse:
        """Liveness: 503 only when an operation made no progress for
        CONN_WEDGED_AFTER_SECONDS (a wedged process), never because a dependency is away."""
        rt: Runtime | None = getattr(request.app.state, "starting", None)
        stalled = rt.watchdog.stalled() if rt is not None else []
        if stalled:
            return JSONResponse(
                error_body("wedged", "no progress", {"stalled": stalled}), status_code=503
            )
        return JSONResponse({"status": "ok"})

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
