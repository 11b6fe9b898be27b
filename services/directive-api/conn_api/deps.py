"""FastAPI dependencies: the runtime and the authenticated caller.

Both are `async def`: FastAPI runs a sync dependency in the thread pool (a thread hop
per request); these do no blocking I/O (a JWKS fetched from a URL goes to a thread in
`Authenticator.authenticate_async`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conn_api.auth import AuthError, Identity
from conn_api.errors import ApiError
from conn_api.runtime import Runtime
from conn_runtime.ops import RETRY_AFTER_SECONDS
from conn_schemas.values import Role

bearer = HTTPBearer(auto_error=False, description="Conn API token or OIDC JWT")


async def get_runtime(request: Request) -> Runtime:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None:
        starting: Runtime | None = getattr(request.app.state, "starting", None)
        missing = starting.deps.missing() if starting is not None else []
        raise ApiError(
            503,
            "unavailable",
            "the service is starting" + (f" (waiting for {', '.join(missing)})" if missing else ""),
            {"missing": missing},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def current_identity(
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Identity:
    if credentials is None:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    return await rt.auth.authenticate_async(f"{credentials.scheme} {credentials.credentials}")


CurrentUser = Annotated[Identity, Depends(current_identity)]


def require_role(identity: Identity, *roles: Role, doing: str) -> None:
    if not identity.has(*roles):
        allowed = ", ".join(r.value for r in roles)
        raise ApiError(
            403,
            "forbidden",
            f"{identity.id} may not {doing} (needs one of: {allowed})",
            {"roles": [r.value for r in identity.roles]},
        )
