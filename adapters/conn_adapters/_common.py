"""Shared plumbing: every port call is bounded by a timeout and raises only PortError."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import httpx
import httpx2
from lightkube import ApiError as KubeApiError

from conn_core.ports import PortError

P = ParamSpec("P")
R = TypeVar("R")

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HasTimeout(Protocol):
    timeout: float


S = TypeVar("S", bound=HasTimeout)


def now_utc() -> datetime:
    return datetime.now(UTC)


def refused_by_target(code: int) -> bool:
    """A 4xx answer (but 408, a timeout) means the target refused: nothing changed."""
    return 400 <= code < 500 and code != 408


def bounded(
    fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Bound the whole call by `self.timeout` and translate every failure to PortError.

    Typed as returning a coroutine function (not just an awaitable), so a decorated
    `async def` keeps the exact signature its port `Protocol` declares
    (see conn_adapters._conformance)."""

    @functools.wraps(fn)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        what = f"{type(self).__name__}.{fn.__name__}"
        try:
            async with asyncio.timeout(self.timeout):
                return await fn(self, *args, **kwargs)
        except PortError:
            raise
        except (TimeoutError, httpx.TimeoutException, httpx2.TimeoutException) as e:
            raise PortError(
                f"{what}: timed out after {self.timeout}s", retriable=True, timeout=True
            ) from e
        except (httpx.HTTPStatusError, httpx2.HTTPStatusError) as e:
            code = e.response.status_code
            raise PortError(
                f"{what}: HTTP {code}: {e.response.text[:300]}",
                retriable=code in RETRIABLE_STATUS,
                rejected=refused_by_target(code),
            ) from e
        except KubeApiError as e:
            code = e.status.code or 0
            raise PortError(
                f"{what}: Kubernetes {code}: {e.status.message}",
                retriable=code in RETRIABLE_STATUS or code == 409,
                rejected=refused_by_target(code),
            ) from e
        except (httpx.HTTPError, httpx2.HTTPError, OSError) as e:
            raise PortError(f"{what}: {type(e).__name__}: {e}", retriable=True) from e
        except (KeyError, ValueError, TypeError) as e:
            raise PortError(f"{what}: unexpected response: {type(e).__name__}: {e}") from e

    return wrapper


def raise_for_status(response: httpx.Response) -> Any:
    response.raise_for_status()
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text
