"""The bridge console: a live, server-rendered web view of incidents for everyone on the
bridge, served by the directive API under /console (issue 20).

- `adapter`: the only code that reads the API's state (its fold of the log);
- `web`: sign-in, pages, live streams (SSE) and the control forms, which call the API's
  own route functions;
- `sessions`, `security`: browser sessions in PostgreSQL, CSRF, headers;
- `templates/`, `static/`: Jinja2 templates (autoescaped) and the one CSS and JS file.

`mount(app)` is all the API application does with it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from conn_api.console.config import ConsoleSettings
from conn_api.console.render import STATIC
from conn_api.console.security import ConsoleHeaders
from conn_api.console.sessions import StoreUnavailable
from conn_api.console.web import Console


def mount(app: FastAPI, settings: ConsoleSettings | None = None) -> Console | None:
    settings = settings or ConsoleSettings()
    if not settings.enabled:
        return None
    console = Console(settings)
    app.include_router(console.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/console", include_in_schema=False)
    async def _console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, exc: StoreUnavailable) -> HTMLResponse:
        return console.error_page(503, "Unavailable", f"{exc}; try again in a moment.")

    app.add_middleware(ConsoleHeaders)
    return console


__all__ = ["Console", "ConsoleSettings", "mount"]
