"""The console's routes: sign-in, pages, live streams and the control forms.

Every control form calls the very route function of the API that the `conn` CLI calls
(`conn_api.routes.hold`, `.resume`, `.handoff`, `.accept_takeover`, `.kill_switch_on/off`,
`conn_api.approvals.decide_approval`) with the signed-in identity: one implementation of every control, the same checks, the
same ledger events. There is no route here that issues a directive.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from conn_api import approvals, routes
from conn_api.auth import AuthError, Identity
from conn_api.console import stream
from conn_api.console.adapter import (
    BridgeReader,
    Controls,
    IncidentPage,
    available_controls,
    packet_freshness,
)
from conn_api.console.config import ConsoleSettings
from conn_api.console.render import Renderer, digest
from conn_api.console.security import (
    FormError,
    cookie_secure,
    read_form,
    same_origin,
    session_cookie,
    session_cookie_name,
    tokens_equal,
)
from conn_api.console.sessions import Session, SessionStore, StoreUnavailable
from conn_api.errors import ApiError
from conn_api.models import (
    AcceptTakeover,
    ApprovalDecision,
    HandoffRequest,
    HoldRequest,
    KillSwitchRequest,
    ResumeRequest,
)
from conn_api.routes import CorrelationPath, IncidentPath
from conn_api.runtime import Runtime

log = logging.getLogger(__name__)


def _answer(model: BaseModel) -> dict[str, Any]:
    """A route's answer as the JSON document a client receives."""
    return model.model_dump(mode="json", exclude_unset=True)


LOGIN_COOKIE = "conn_console_login"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
FILTERS = (
    ("active", "Active"),
    ("open", "Open"),
    ("held", "On hold"),
    ("handoff", "Handoff requested"),
    ("handed-off", "Handed off"),
    ("closed", "Closed"),
    ("all", "All"),
)
INCIDENT_PANELS = (
    "summary",
    "health",
    "authority",
    "packet_ref",
    "refusals",
    "controls",
    "approvals",
)
PANEL_IDS = {
    "summary": "panel-summary",
    "health": "panel-health",
    "authority": "panel-authority",
    "packet_ref": "panel-packet",
    "refusals": "panel-refusals",
    "controls": "panel-controls",
    "approvals": "panel-approvals",
    "killswitch": "panel-killswitch",
    "incident_rows": "panel-incident-rows",
    "packet_current": "panel-packet-current",
    "fleet_summary": "panel-fleet-summary",
}


class Console:
    """What the console holds: settings, the session store and the templates."""

    def __init__(self, settings: ConsoleSettings | None = None) -> None:
        self.settings = settings or ConsoleSettings()
        self.sessions = SessionStore(lifetime_seconds=self.settings.session_seconds)
        self.renderer = Renderer()
        self.router = APIRouter(prefix="/console", include_in_schema=False)
        self._routes()

    # -- helpers -------------------------------------------------------------------------

    def html(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("me", None)
        context.setdefault("csrf", "")
        context.setdefault("flash", None)
        context.setdefault("now", datetime.now(UTC))
        context.setdefault("ks", None)
        return HTMLResponse(self.renderer.render(name, **context), status_code=status)

    def error_page(
        self, status: int, heading: str, message: str, session: Session | None = None, **ctx: Any
    ) -> HTMLResponse:
        return self.html(
            "error.html",
            status,
            code=status,
            heading=heading,
            message=message,
            me=session.identity if session else None,
            csrf=session.csrf if session else "",
            **ctx,
        )

    def runtime(self, request: Request) -> Runtime | None:
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        return rt

    async def session(self, request: Request, rt: Runtime) -> Session | None:
        return await self.sessions.get(rt.db, session_cookie(request), rt.auth)

    def to_login(self, request: Request) -> RedirectResponse:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(f"/console/login?next={_quote(target)}", status_code=303)

    async def page_context(
        self, request: Request
    ) -> tuple[Runtime, Session, BridgeReader] | Response:
        rt = self.runtime(request)
        if rt is None:
            return self.error_page(
                503, "Starting", "The service is starting; this page will work in a moment."
            )
        session = await self.session(request, rt)
        if session is None:
            return self.to_login(request)
        return rt, session, BridgeReader(rt, ledger_rows=self.settings.ledger_rows)

    def render_panel(self, name: str, **context: Any) -> str:
        return self.renderer.render(f"panels/{name}.html", **context)

    # -- routes --------------------------------------------------------------------------

    def _routes(self) -> None:
        r = self.router
        r.add_api_route("/", self.incidents, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/login", self.login_form, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/login", self.login, methods=["POST"], response_class=HTMLResponse)
        r.add_api_route("/logout", self.logout, methods=["POST"])
        r.add_api_route("/events", self.incidents_stream, methods=["GET"])
        r.add_api_route(
            "/incidents/{incident_id}", self.incident, methods=["GET"], response_class=HTMLResponse
        )
        r.add_api_route(
            "/incidents/{incident_id}/packet",
            self.packet,
            methods=["GET"],
            response_class=HTMLResponse,
        )
        r.add_api_route("/incidents/{incident_id}/events", self.incident_stream, methods=["GET"])
        for verb in ("hold", "resume", "handoff", "accept"):
            r.add_api_route(
                f"/incidents/{{incident_id}}/{verb}", self._control_route(verb), methods=["POST"]
            )
        r.add_api_route(
            "/incidents/{incident_id}/approvals/{correlation_id}",
            self.decide_approval,
            methods=["POST"],
        )
        r.add_api_route("/kill-switch", self.kill_switch, methods=["POST"])

    # -- sign in / out -------------------------------------------------------------------

    def _login_page(
        self, request: Request, *, next_url: str, status: int = 200, error: str = ""
    ) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        resp = self.html(
            "login.html",
            status,
            login_csrf=token,
            next=next_url,
            error=error,
            error_status=status,
        )
        resp.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=900,
            path="/console/login",
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request, self.settings.cookie_secure),
        )
        return resp

    async def login_form(self, request: Request, next: str = "/console/") -> HTMLResponse:
        return self._login_page(request, next_url=_safe_next(next))

    async def login(self, request: Request) -> Response:
        rt = self.runtime(request)
        if rt is None:
            return self.error_page(503, "Starting", "The service is starting; try again shortly.")
        try:
            form = await read_form(request)
        except FormError as exc:
            return self._login_page(
                request, next_url="/console/", status=exc.status, error=exc.message
            )
        next_url = _safe_next(form.get("next", "/console/"))
        why = same_origin(request)
        if why is not None or not tokens_equal(
            request.cookies.get(LOGIN_COOKIE, ""), form.get("login_csrf")
        ):
            return self._login_page(
                request,
                next_url=next_url,
                status=403,
                error=why or "the sign-in form expired; please try again",
            )
        token = form.get("token", "").strip()
        if not token or len(token) > 8192:
            return self._login_page(
                request, next_url=next_url, status=401, error="paste your token"
            )
        try:
            identity = rt.auth.authenticate(f"Bearer {token}")
        except AuthError as exc:
            log.info("console sign-in refused", extra={"reason": str(exc)})
            return self._login_page(request, next_url=next_url, status=401, error=str(exc))
        if identity.kind != "human":
            return self._login_page(
                request,
                next_url=next_url,
                status=403,
                error=f"{identity.id} is a service identity; the console is for people",
            )
        # Session fixation: whatever session id the browser brought is ended, and the
        # signed-in session always gets a new random id (never one a third party knows).
        planted = session_cookie(request)
        if planted:
            await self.sessions.delete(rt.db, planted)
        session = await self.sessions.create(rt.db, identity, token=token)
        log.info("console sign-in", extra={"actor": identity.id, "via": identity.via})
        secure = cookie_secure(request, self.settings.cookie_secure)
        resp = RedirectResponse(next_url, status_code=303)
        resp.set_cookie(
            session_cookie_name(secure),
            session.sid,
            max_age=max(1, int((session.expires_at - datetime.now(UTC)).total_seconds())),
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        resp.delete_cookie(LOGIN_COOKIE, path="/console/login")
        return resp

    async def logout(self, request: Request) -> Response:
        rt = self.runtime(request)
        if rt is None:
            return self.error_page(503, "Starting", "The service is starting; try again shortly.")
        session = await self.session(request, rt)
        if session is not None:
            refused = await self._check_post(request, session)
            if isinstance(refused, Response):
                return refused
            await self.sessions.delete(rt.db, session.sid)
        resp = RedirectResponse("/console/login", status_code=303)
        for secure in (True, False):
            resp.delete_cookie(session_cookie_name(secure), path="/", secure=secure)
        return resp

    # -- pages ---------------------------------------------------------------------------

    def _incident_rows(self, reader: BridgeReader, flt: str) -> list[Any]:
        rows = reader.incidents()
        if flt == "active":
            return [r for r in rows if r.status != "closed"]
        if flt == "all":
            return rows
        return [r for r in rows if r.status == flt or any(b.code == flt for b in r.badges)]

    async def incidents(self, request: Request, filter: str = "active") -> Response:
        got = await self.page_context(request)
        if isinstance(got, Response):
            return got
        rt, session, reader = got
        flt = filter if filter in dict(FILTERS) else "active"
        flash = await self.sessions.pop_flash(rt.db, session.sid)
        return self.html(
            "incidents.html",
            me=session.identity,
            csrf=session.csrf,
            flash=flash,
            rows=self._incident_rows(reader, flt),
            fleet=reader.fleet_summary(),
            filter=flt,
            filters=FILTERS,
            ks=reader.kill_switch(),
            me_controls=available_controls(session.identity, None, reader.control),
            back="/console/",
        )

    def _incident_context(self, session: Session, page: IncidentPage) -> dict[str, Any]:
        return {"page": page, "me": session.identity, "csrf": session.csrf, "ks": page.kill_switch}

    async def incident(self, request: Request, incident_id: IncidentPath) -> Response:
        got = await self.page_context(request)
        if isinstance(got, Response):
            return got
        rt, session, reader = got
        page = reader.incident(session.identity, incident_id)
        flash = await self.sessions.pop_flash(rt.db, session.sid)
        return self.html(
            "incident.html",
            200 if page.opened else 404,
            flash=flash,
            now=page.now,
            **self._incident_context(session, page),
        )

    async def packet(self, request: Request, incident_id: IncidentPath) -> Response:
        got = await self.page_context(request)
        if isinstance(got, Response):
            return got
        rt, session, reader = got
        page = await reader.packet(session.identity, incident_id)
        if page is None:
            return self.error_page(
                404,
                "No takeover packet",
                f"No takeover packet has been published for {incident_id}.",
                session,
                ks=reader.kill_switch(),
            )
        flash = await self.sessions.pop_flash(rt.db, session.sid)
        return self.html(
            "packet.html",
            me=session.identity,
            csrf=session.csrf,
            flash=flash,
            page=page,
            ks=page.kill_switch,
            freshness=page.freshness,
            incident_id=incident_id,
        )

    # -- live streams --------------------------------------------------------------------

    async def _stream_context(
        self, request: Request
    ) -> tuple[Runtime, Session, BridgeReader] | Response:
        rt = self.runtime(request)
        if rt is None:
            return Response("starting", status_code=503, media_type="text/plain")
        session = await self.session(request, rt)
        if session is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        return rt, session, BridgeReader(rt, ledger_rows=self.settings.ledger_rows)

    def _sse(self, body: Any) -> StreamingResponse:
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"},
        )

    def _still_signed_in(self, rt: Runtime, sid: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            try:
                return await self.sessions.get(rt.db, sid, rt.auth) is not None
            except StoreUnavailable:
                return True  # valid a moment ago; asked again at the next re-check

        return check

    async def incident_stream(
        self,
        request: Request,
        incident_id: IncidentPath,
        after: int = 0,
        view: str = "incident",
        packet: str = "",
    ) -> Response:
        got = await self._stream_context(request)
        if isinstance(got, Response):
            return got
        rt, session, reader = got
        last_id = request.headers.get("last-event-id", "")
        last = int(last_id) if last_id.isdigit() and len(last_id) < 19 else max(0, after)
        sent: dict[str, str] = {}
        seen: list[object] = [None]
        cursor = [last]
        packet_view = view == "packet"

        async def poll() -> tuple[str | None, bool]:
            if self.runtime(request) is not rt:
                return None, True
            ledger = reader.ledger(incident_id)
            head = ledger[-1].sequence if ledger else 0
            c = reader.control
            mark = (head, c.kill_switch, c.changed_at)
            if mark == seen[0]:
                return None, False
            seen[0] = mark
            panels: dict[str, str] = {}
            rows: list[dict[str, Any]] = []
            if packet_view:
                html = self.render_panel(
                    "packet_current",
                    freshness=packet_freshness(reader.state(incident_id), packet),
                    incident_id=incident_id,
                )
                panels["packet_current"] = html
            else:
                page = reader.incident(session.identity, incident_id, with_ledger=False)
                ctx = self._incident_context(session, page)
                for name in INCIDENT_PANELS:
                    panels[name] = self.render_panel(name, **ctx)
                for row in reader.rows_after(session.identity, incident_id, cursor[0])[:500]:
                    rows.append(
                        {
                            "seq": row.sequence,
                            "type": row.event_type,
                            "html": self.render_panel("ledger_row", row=row),
                        }
                    )
            panels["killswitch"] = self.render_panel("killswitch", ks=reader.kill_switch())
            changed = {
                PANEL_IDS[name]: {"html": html, "hash": digest(html)}
                for name, html in panels.items()
                if sent.get(name) != digest(html)
            }
            sent.update({name: digest(html) for name, html in panels.items()})
            if rows:
                cursor[0] = rows[-1]["seq"]
                if len(rows) == 500:
                    seen[0] = None  # more to send on the next tick
            if not rows and not changed:
                return None, False
            return stream.event("update", {"rows": rows, "panels": changed}, cursor[0]), False

        return self._sse(
            stream.run(
                poll,
                still_signed_in=self._still_signed_in(rt, session.sid),
                tick=self.settings.stream_tick_seconds,
                heartbeat=self.settings.heartbeat_seconds,
                recheck=self.settings.session_recheck_seconds,
                view="packet" if packet_view else "incident",
            )
        )

    async def incidents_stream(self, request: Request, filter: str = "active") -> Response:
        got = await self._stream_context(request)
        if isinstance(got, Response):
            return got
        rt, session, reader = got
        flt = filter if filter in dict(FILTERS) else "active"
        sent: dict[str, str] = {}
        seen: list[object] = [None]

        async def poll() -> tuple[str | None, bool]:
            if self.runtime(request) is not rt:
                return None, True
            mark = reader.fingerprint()
            if mark == seen[0]:
                return None, False
            seen[0] = mark
            panels = {
                "incident_rows": self.render_panel(
                    "incident_rows", rows=self._incident_rows(reader, flt)
                ),
                "killswitch": self.render_panel("killswitch", ks=reader.kill_switch()),
                "fleet_summary": self.render_panel("fleet_summary", fleet=reader.fleet_summary()),
            }
            changed = {
                PANEL_IDS[name]: {"html": html, "hash": digest(html)}
                for name, html in panels.items()
                if sent.get(name) != digest(html)
            }
            sent.update({name: digest(html) for name, html in panels.items()})
            if not changed:
                return None, False
            return stream.event("update", {"panels": changed}), False

        return self._sse(
            stream.run(
                poll,
                still_signed_in=self._still_signed_in(rt, session.sid),
                tick=self.settings.stream_tick_seconds,
                heartbeat=self.settings.heartbeat_seconds,
                recheck=self.settings.session_recheck_seconds,
                view="list",
            )
        )

    # -- controls ------------------------------------------------------------------------

    async def _check_post(self, request: Request, session: Session) -> dict[str, str] | Response:
        """The form, if the POST is same-origin and carries this session's CSRF token."""
        why = same_origin(request)
        if why is not None:
            return self.error_page(403, "Refused", why, session)
        try:
            form = await read_form(request)
        except FormError as exc:
            return self.error_page(exc.status, "Refused", exc.message, session)
        if not tokens_equal(session.csrf, form.get("csrf")):
            log.warning("console CSRF check failed", extra={"actor": session.identity.id})
            return self.error_page(
                403,
                "Refused",
                "The form did not carry this session's CSRF token. Reload the page and try again.",
                session,
            )
        return form

    async def _perform(
        self,
        request: Request,
        verb: str,
        back: Callable[[dict[str, str]], str],
        call: Callable[[Runtime, Identity, dict[str, str]], Awaitable[dict[str, Any]]],
        *,
        needs_confirm: bool = False,
    ) -> Response:
        rt = self.runtime(request)
        if rt is None:
            return self.error_page(503, "Starting", "The service is starting; try again shortly.")
        session = await self.session(request, rt)
        if session is None:
            return self.error_page(401, "Signed out", "Sign in again to use the controls.")
        form = await self._check_post(request, session)
        if isinstance(form, Response):
            return form
        flash: dict[str, Any]
        if needs_confirm and form.get("confirm") != "yes":
            flash = _refused(422, "invalid_request", f"{verb}: tick the confirmation box first")
        else:
            try:
                result = await call(rt, session.identity, form)
            except ApiError as exc:
                flash = _refused(exc.status, exc.code, exc.message)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                flash = _refused(422, "invalid_request", f"{where}: {first['msg']}")
            else:
                where = f" at ledger #{result['sequence']}" if result.get("sequence") else ""
                flash = {
                    "ok": True,
                    "status": 200,
                    "message": f"{verb}: {result.get('event_type', 'recorded')}{where}",
                }
        log.info(
            "console control",
            extra={"verb": verb, "actor": session.identity.id, "ok": flash["ok"]},
        )
        await self.sessions.set_flash(rt.db, session.sid, flash)
        return RedirectResponse(back(form), status_code=303)

    def _control_route(self, verb: str) -> Callable[..., Awaitable[Response]]:
        async def control(request: Request, incident_id: IncidentPath) -> Response:
            back = f"/console/incidents/{incident_id}"

            async def call(rt: Runtime, me: Identity, form: dict[str, str]) -> dict[str, Any]:
                detail = form.get("detail", "")
                if verb == "hold":
                    return _answer(
                        await routes.hold(incident_id, HoldRequest(detail=detail), rt, me)
                    )
                if verb == "resume":
                    return _answer(
                        await routes.resume(incident_id, ResumeRequest(detail=detail), rt, me)
                    )
                if verb == "handoff":
                    handoff = HandoffRequest(to_team=form.get("to_team", ""), detail=detail)
                    return _answer(await routes.handoff(incident_id, handoff, rt, me))
                # accept: the form must name the exact packet hash it showed; never "latest".
                sha = form.get("packet_sha256", "")
                if not SHA256.fullmatch(sha):
                    raise ApiError(
                        422,
                        "invalid_request",
                        "accepting a takeover names the exact packet sha256 you read",
                    )
                accept = AcceptTakeover(packet_sha256=sha, detail=detail)
                return _answer(await routes.accept_takeover(incident_id, accept, rt, me))

            return await self._perform(
                request,
                verb,
                lambda _form: back,
                call,
                needs_confirm=verb in ("resume", "handoff", "accept"),
            )

        control.__name__ = f"console_{verb}"
        return control

    async def decide_approval(
        self, request: Request, incident_id: IncidentPath, correlation_id: CorrelationPath
    ) -> Response:
        """Approve or decline one directive's decision packet: the form names the exact
        packet sha256 it showed (never "latest"); approving needs the confirmation box,
        declining a reason (the API refuses a decline without one)."""

        async def call(rt: Runtime, me: Identity, form: dict[str, str]) -> dict[str, Any]:
            decision = form.get("decision", "")
            if decision not in ("approve", "decline"):
                raise ApiError(422, "invalid_request", "decision must be approve or decline")
            if decision == "approve" and form.get("confirm") != "yes":
                raise ApiError(422, "invalid_request", "approve: tick the confirmation box first")
            sha = form.get("packet_sha256", "")
            if not SHA256.fullmatch(sha):
                raise ApiError(
                    422,
                    "invalid_request",
                    "approving or declining names the exact decision packet sha256 you read",
                )
            body = ApprovalDecision(
                decision="approve" if decision == "approve" else "decline",
                packet_sha256=sha,
                detail=form.get("detail", ""),
            )
            return _answer(
                await approvals.decide_approval(incident_id, correlation_id, body, rt, me)
            )

        return await self._perform(
            request, "approval", lambda _form: f"/console/incidents/{incident_id}", call
        )

    async def kill_switch(self, request: Request) -> Response:
        async def call(rt: Runtime, me: Identity, form: dict[str, str]) -> dict[str, Any]:
            action = form.get("action")
            body = KillSwitchRequest(reason=form.get("reason", ""))
            if action == "engage":
                return _answer(await routes.kill_switch_on(body, rt, me))
            if action == "release":
                return _answer(await routes.kill_switch_off(body, rt, me))
            raise ApiError(422, "invalid_request", "action must be engage or release")

        def back(form: dict[str, str]) -> str:
            return _safe_next(form.get("back", "/console/"))

        async def confirmed(rt: Runtime, me: Identity, form: dict[str, str]) -> dict[str, Any]:
            if form.get("action") == "release" and form.get("confirm") != "yes":
                raise ApiError(422, "invalid_request", "release: tick the confirmation box first")
            return await call(rt, me, form)

        return await self._perform(request, "kill switch", back, confirmed)


def _refused(status: int, code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "status": status, "code": code, "message": message}


def _safe_next(value: str) -> str:
    """Only paths of the console itself (no scheme, no host, no `//`, no backslash)."""
    if (
        (value.startswith("/console/") or value == "/console")
        and "//" not in value
        and "\\" not in value
        and all(32 < ord(ch) < 127 for ch in value)
    ):
        return value
    return "/console/"


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="/")


__all__ = ["Console", "Controls"]
