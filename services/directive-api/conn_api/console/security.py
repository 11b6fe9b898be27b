"""Browser-facing protections of the console: response headers (a strict CSP with no
inline script, no framing, no referrer), the cookie, same-origin checks, CSRF tokens and
bounded form bodies."""

from __future__ import annotations

import hmac
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/console"
MAX_FORM_BYTES = 16 * 1024

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)

HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class ConsoleHeaders:
    """ASGI middleware: the security headers on every answer under /console (pages,
    streams, static files, errors), and `no-store` on everything but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {h for h, _ in HEADERS}
                ]
                headers += HEADERS
                if not static:
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


CookieMode = Literal["auto", "always", "never"]


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def cookie_secure(request: Request, mode: CookieMode) -> bool:
    return mode == "always" or (mode == "auto" and is_https(request))


def session_cookie_name(secure: bool) -> str:
    # `__Host-` pins the cookie to this host and path /, and requires Secure.
    return "__Host-conn_console" if secure else "conn_console"


def session_cookie(request: Request) -> str | None:
    return request.cookies.get("__Host-conn_console") or request.cookies.get("conn_console")


def same_origin(request: Request) -> str | None:
    """None if the request may come from this site's own pages, else why not.

    Browsers send `Sec-Fetch-Site` (which a page cannot forge) on a form POST: anything
    but same-origin is refused, whatever else the request carries (on top of
    SameSite=Strict and the CSRF token). Older browsers without it send `Origin`."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"cross-site request ({site})"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        return "request from another origin"
    return None


def tokens_equal(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and hmac.compare_digest(expected, given)


class FormError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """A urlencoded form, bounded in size and fields; the first value of each field."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise FormError(415, "expected a form (application/x-www-form-urlencoded)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise FormError(413, f"form too large (over {limit} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormError(413, f"form too large (over {limit} bytes)")
    try:
        text = bytes(body).decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(400, f"unreadable form: {exc}") from None
    return {k: v[0] for k, v in parsed.items() if v}
