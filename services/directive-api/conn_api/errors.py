"""The one place where exceptions become HTTP answers.

Every error body has one shape:

    {"error": {"code": "<machine-readable>", "message": "<for humans>", "detail": <any>}}

`code` is a RefusalReason value for refused directives and control verbs, else one
of: unauthorized, forbidden, not_found, invalid_request, idempotency_key_reused,
idempotency_in_progress, conflict, unavailable, internal_error.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from conn_api.auth import AuthError
from conn_runtime.ops import RETRY_AFTER_SECONDS
from conn_runtime.resilience import NETWORK, dependency_of
from conn_schemas.values import RefusalReason

log = logging.getLogger(__name__)

REFUSAL_STATUS: dict[RefusalReason, int] = {
    RefusalReason.INCIDENT_NOT_OPEN: 404,
    RefusalReason.INCIDENT_CLOSED: 409,
    RefusalReason.NOT_HUMAN: 403,
    RefusalReason.ROLE_MAY_NOT_DIRECT: 403,
    RefusalReason.NO_AUTHORITY: 409,
    RefusalReason.NOT_CONN_HOLDER: 403,
    RefusalReason.KILL_SWITCH: 409,
    RefusalReason.ON_HOLD: 409,
    RefusalReason.ACTION_NOT_ALLOWED: 403,
    RefusalReason.TARGET_NOT_ALLOWED: 403,
    RefusalReason.REGION_NOT_ALLOWED: 403,
    RefusalReason.RESERVED_TO_TEAM: 403,
    RefusalReason.BLAST_RADIUS: 403,
    RefusalReason.STEP_UNVERIFIED: 409,
    RefusalReason.STALE_BASE: 409,
    RefusalReason.INVALID_BASE: 422,
    RefusalReason.EXPECTATION_CONFLICT: 409,
    RefusalReason.PARTIAL_STATE: 409,
    RefusalReason.DUPLICATE: 409,
    RefusalReason.INVALID_DIRECTIVE: 422,
    RefusalReason.AUTHORITY_WIDENING: 403,
    RefusalReason.APPROVAL_REQUIRED: 409,
    RefusalReason.APPROVAL_DECLINED: 409,
    RefusalReason.APPROVAL_EXPIRED: 409,
    RefusalReason.SELF_APPROVAL: 403,
}


class ErrorInfo(BaseModel):
    code: str = Field(description="Machine-readable: a RefusalReason value or a generic code")
    message: str = Field(description="For humans")
    detail: Any = Field(default=None, description="Structured context (may be null)")


class ErrorResponse(BaseModel):
    """The one shape of every error answer (documented in the OpenAPI document)."""

    error: ErrorInfo


class ApiError(Exception):
    """An error answered to the client as-is."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers

    @classmethod
    def refused(cls, reason: RefusalReason, message: str, detail: Any = None) -> ApiError:
        return cls(REFUSAL_STATUS.get(reason, 409), reason.value, message, detail)


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, detail), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


def _clean_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors[:20]:
        out.append(
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
        )
    return out


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = exc.headers
        if exc.status == 503 and not (headers and "Retry-After" in headers):
            headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_SECONDS)}
        return error_response(exc.status, exc.code, exc.message, exc.detail, headers)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        return error_response(
            401, "unauthorized", str(exc), headers={"WWW-Authenticate": 'Bearer realm="conn"'}
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(list(exc.errors()))
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"])
        return error_response(422, "invalid_request", f"{where}: {first['msg']}", errors)

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError) -> JSONResponse:
        """A model built inside a route (an event payload from request fields) refused
        a value: the request's fault, answered like a body that failed validation."""
        errors = _clean_validation_errors(list(exc.errors()))
        first = errors[0] if errors else {"loc": [], "msg": "invalid value"}
        where = ".".join(first["loc"]) or exc.title
        log.info("request refused by a model", extra={"path": request.url.path, "where": where})
        return error_response(422, "invalid_request", f"{where}: {first['msg']}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    async def _dependency_error(request: Request, exc: Exception) -> JSONResponse:
        """A dependency went away under this request: 503 + Retry-After, never a 500."""
        if isinstance(exc, asyncpg.DataError):
            # e.g. a NUL character or a value out of range for its column: bad input.
            return error_response(
                422,
                "invalid_request",
                "the request holds a value that cannot be stored (e.g. a NUL character)",
                {"sqlstate": getattr(exc, "sqlstate", None)},
            )
        dependency = dependency_of(exc)
        if dependency is None:
            return await _unexpected(request, exc)
        rt = getattr(request.app.state, "starting", None)
        deps = getattr(rt, "deps", None)
        if deps is not None:
            deps.report(exc)
        missing = [dependency] if dependency != NETWORK else (deps.missing() if deps else [])
        log.warning(
            "dependency unavailable",
            extra={"path": request.url.path, "dependency": dependency, "error": repr(exc)},
        )
        named = ", ".join(missing) or "a dependency"
        return error_response(
            503,
            "unavailable",
            f"{named} is unavailable; retry",
            {"missing": missing},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    # Registered per class (not only under `Exception`, whose handler Starlette runs
    # as the last resort and then re-raises): a dependency error is an answer, not a crash.
    for cls in (asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError, OSError, TimeoutError):
        app.add_exception_handler(cls, _dependency_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if dependency_of(exc) is not None:
            return await _dependency_error(request, exc)
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal_error", "internal error; see the service log")
