"""The console's HTTP contract against the real API process: sessions, CSRF, headers,
bounded forms, the live stream's resume. No browser: these are what a hostile client
(not a well-behaved page) sends."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import uuid
from typing import Any

import httpx
import pytest
from console_support import TOKENS, Api

from conn_localstack.ephemeral import Pipeline, free_port

pytestmark = pytest.mark.integration

SECURITY_HEADERS = {
    "content-security-policy": re.compile(
        r"default-src 'none'; script-src 'self'; style-src 'self'.*frame-ancestors 'none'"
    ),
    "x-frame-options": re.compile("^DENY$"),
    "referrer-policy": re.compile("^same-origin$"),
    "x-content-type-options": re.compile("^nosniff$"),
}


def browser_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=15, follow_redirects=False)


def sign_in(client: httpx.Client, who: str, token: str | None = None) -> httpx.Response:
    form = client.get("/console/login")
    login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert login_csrf is not None
    return client.post(
        "/console/login",
        data={
            "login_csrf": login_csrf.group(1),
            "token": token if token is not None else TOKENS[who],
            "next": "/console/",
        },
    )


def csrf(client: httpx.Client, path: str = "/console/") -> str:
    page = client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


def test_signing_in_gives_an_httponly_strict_session_cookie_not_the_token(api: Api) -> None:
    with browser_client(api.url) as c:
        resp = sign_in(c, "alice")
        assert resp.status_code == 303 and resp.headers["location"] == "/console/"
        cookies = resp.headers.get_list("set-cookie")
        session = next(h for h in cookies if h.startswith("conn_console="))
        assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/" in session
        assert "Max-Age=" in session
        for header in cookies:
            assert TOKENS["alice"] not in header
        page = c.get("/console/")
        assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
        assert TOKENS["alice"] not in page.text


@pytest.mark.parametrize(
    ("token", "status", "text"),
    [
        ("not-a-token", 401, "invalid token"),
        ("", 401, "paste your token"),
        (TOKENS["alertbot"], 403, "service identity"),
    ],
)
def test_bad_tokens_and_service_identities_cannot_sign_in(
    api: Api, token: str, status: int, text: str
) -> None:
    with browser_client(api.url) as c:
        resp = sign_in(c, "alice", token=token)
        assert resp.status_code == status and text in resp.text
        assert not any(h.startswith("conn_console=") for h in resp.headers.get_list("set-cookie"))
        assert c.get("/console/").status_code == 303


def test_sign_in_needs_the_form_it_was_given(api: Api) -> None:
    """Login CSRF: a form posted from elsewhere (no login cookie, or cross-site) fails."""
    with browser_client(api.url) as c:
        resp = c.post("/console/login", data={"login_csrf": "x", "token": TOKENS["alice"]})
        assert resp.status_code == 403
    with browser_client(api.url) as c:
        form = c.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert token is not None
        resp = c.post(
            "/console/login",
            data={"login_csrf": token.group(1), "token": TOKENS["alice"]},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert resp.status_code == 403


def test_a_control_without_this_sessions_csrf_token_changes_nothing(api: Api) -> None:
    incident = api.open_incident("CSRF check")
    before = api.types(incident)
    with browser_client(api.url) as alice, browser_client(api.url) as other:
        sign_in(alice, "alice")
        sign_in(other, "alice")
        good = csrf(alice)
        not_mine = csrf(other)
        assert good != not_mine
        hold = f"/console/incidents/{incident}/hold"
        for data, headers in (
            ({"detail": "no token"}, {}),
            ({"csrf": ""}, {}),
            ({"csrf": "x" * 43}, {}),
            ({"csrf": not_mine}, {}),
            ({"csrf": good}, {"Sec-Fetch-Site": "cross-site"}),
            ({"csrf": good}, {"Origin": "https://evil.example"}),
        ):
            resp = alice.post(hold, data=data, headers=headers)
            assert resp.status_code == 403, (data, headers, resp.status_code)
        assert api.types(incident) == before
        # And with it, the very same request holds.
        resp = alice.post(hold, data={"csrf": good, "detail": "ok"})
        assert resp.status_code == 303
    assert api.types(incident)[: len(before) + 1] == [*before, "HoldDeclared"]


def test_signing_in_never_keeps_a_session_id_someone_planted(api: Api) -> None:
    """Session fixation: an id set in the victim's browser beforehand (made up, or the
    attacker's own live session) is never the id of the victim's signed-in session, and
    the planted one no longer works."""
    with browser_client(api.url) as attacker:
        sign_in(attacker, "olive")
        live = str(attacker.cookies.get("conn_console"))
        assert attacker.get("/console/").status_code == 200
    for planted in ("chosen-by-the-attacker-" + "x" * 20, live):
        with browser_client(api.url) as victim:
            victim.cookies.set("conn_console", planted)
            resp = sign_in(victim, "alice")
            assert resp.status_code == 303
            fresh = next(
                h for h in resp.headers.get_list("set-cookie") if h.startswith("conn_console=")
            )
            sid = fresh.split(";")[0].removeprefix("conn_console=")
            assert sid and sid != planted
            page = victim.get("/console/")
            assert "Signed in as <strong>alice</strong>" in page.text
        with browser_client(api.url) as again:
            again.cookies.set("conn_console", planted)
            assert again.get("/console/").status_code == 303, "the planted id is no session"


def test_the_live_stream_is_per_session_per_incident_and_per_role(api: Api) -> None:
    """SSE authorization: no session, no stream; an observer's stream carries no control
    form and free texts scrubbed as the API shows them to an observer; a stream carries
    only its own incident's entries."""
    secret = "password=hunter2 on db-7.internal:5432"
    incident = api.open_incident("Stream authorization")
    api.ok("alice", "POST", f"/v1/incidents/{incident}/hold", {"detail": secret})
    api.wait_for(
        incident,
        lambda es: any(e["event"]["event_type"] == "HoldDeclared" for e in es),
        "the hold",
    )
    olive_ledger = api.ok("olive", "GET", f"/v1/incidents/{incident}/ledger?limit=1000")
    assert "hunter2" not in json.dumps(olive_ledger)  # the API's own rule: the oracle
    url = f"/console/incidents/{incident}/events"
    with browser_client(api.url) as anonymous:
        assert anonymous.get(url).status_code == 401
    with browser_client(api.url) as c:
        sign_in(c, "olive")
        with c.stream("GET", url) as resp:
            _, data = _first_update(resp)
        text = json.dumps(data)
        assert "HoldDeclared" in {r["type"] for r in data["rows"]}
        assert "hunter2" not in text and "db-7.internal" not in text
        assert "<form" not in data["panels"]["panel-controls"]["html"]
        with c.stream("GET", "/console/incidents/inc-never-opened/events") as resp:
            _, other = _first_update(resp)
        assert other["rows"] == [] and incident not in json.dumps(other)
    with browser_client(api.url) as c:
        sign_in(c, "alice")
        with c.stream("GET", url) as resp:
            _, data = _first_update(resp)
        assert "hunter2" in json.dumps(data)  # the commander reads the note whole
        assert "data-control" in data["panels"]["panel-controls"]["html"]


CONTROL_POSTS = (
    "/console/incidents/{incident}/hold",
    "/console/incidents/{incident}/resume",
    "/console/incidents/{incident}/handoff",
    "/console/incidents/{incident}/accept",
    "/console/incidents/{incident}/approvals/{correlation}",
    "/console/kill-switch",
    "/console/logout",
)
"""Every POST of the console but sign-in (which has its own login CSRF test);
test_console_views checks this list against the router."""


def test_no_console_post_works_cross_site_or_without_the_csrf_token(api: Api) -> None:
    """A cross-site form post carries the victim's cookie (as a browser without SameSite
    would send it) and a well-formed body, but never this session's CSRF token, or it
    comes with Sec-Fetch-Site: cross-site / a foreign Origin: every control refuses it
    with 403 and nothing is appended; the session survives."""
    incident = api.open_incident("CSRF on every control")
    before = api.types(incident)
    body = {
        "detail": "x",
        "to_team": "database-platform",
        "packet_sha256": "a" * 64,
        "decision": "decline",
        "action": "engage",
        "reason": "x",
        "confirm": "yes",
    }
    with browser_client(api.url) as victim:
        sign_in(victim, "root")
        good = csrf(victim)
        for template in CONTROL_POSTS:
            path = template.format(incident=incident, correlation="d-1")
            for extra, headers in (
                ({}, {}),
                ({"csrf": "forged"}, {}),
                ({"csrf": good}, {"Sec-Fetch-Site": "cross-site"}),
                ({"csrf": good}, {"Sec-Fetch-Site": "same-site"}),
                ({"csrf": good}, {"Origin": "https://evil.example"}),
                ({"csrf": good}, {"Origin": "null"}),
            ):
                resp = victim.post(path, data={**body, **extra}, headers=headers)
                assert resp.status_code == 403, (path, extra, headers, resp.status_code)
        assert victim.get("/console/").status_code == 200, "still signed in"
    assert api.types(incident) == before
    assert api.ok("olive", "GET", f"/v1/incidents/{incident}")["kill_switch"]["engaged"] is False


def test_signing_out_ends_the_session_everywhere(api: Api) -> None:
    with browser_client(api.url) as c:
        sign_in(c, "olive")
        cookie = c.cookies.get("conn_console")
        token = csrf(c)
        assert c.post("/console/logout", data={"csrf": token}).status_code == 303
    with browser_client(api.url) as replay:
        replay.cookies.set("conn_console", str(cookie))
        assert replay.get("/console/").status_code == 303
        assert replay.get("/console/events").status_code == 401


def test_controls_need_a_session(api: Api) -> None:
    incident = api.open_incident("No session")
    with browser_client(api.url) as c:
        resp = c.post(f"/console/incidents/{incident}/hold", data={"csrf": "x"})
        assert resp.status_code == 401
        assert c.get(f"/console/incidents/{incident}").status_code == 303
        assert c.get(f"/console/incidents/{incident}/events").status_code == 401
    assert "HoldDeclared" not in api.types(incident)


def test_every_console_answer_carries_the_security_headers(api: Api) -> None:
    incident = api.open_incident("Headers")
    with browser_client(api.url) as c:
        answers = [c.get("/console/login"), c.get("/console/"), c.get("/console/static/console.js")]
        sign_in(c, "olive")
        answers += [
            c.get("/console/"),
            c.get(f"/console/incidents/{incident}"),
            c.get(f"/console/incidents/{incident}/packet"),
            c.get("/console/incidents/never-opened"),
        ]
        with c.stream("GET", f"/console/incidents/{incident}/events") as events:
            answers.append(events)
    for resp in answers:
        for name, pattern in SECURITY_HEADERS.items():
            assert pattern.search(resp.headers.get(name, "")), (resp.url, name)
    assert [r.status_code for r in answers] == [200, 303, 200, 200, 200, 404, 404, 200]
    assert all(
        r.headers["cache-control"] == "no-store" for r in answers if "static" not in str(r.url)
    )
    # The API's JSON routes are untouched by the console.
    assert "content-security-policy" not in api.http.get("/healthz").headers


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"csrf=x&detail=" + b"a" * (10 * 1024 * 1024), {}, 413),
        (b"csrf=%ff%fe", {}, 400),
        (b"&".join(b"f%d=1" % i for i in range(50)), {}, 400),
        (b'{"csrf": "x"}', {"Content-Type": "application/json"}, 415),
    ],
)
def test_oversized_or_malformed_forms_get_a_4xx(
    api: Api, body: bytes, headers: dict[str, str], status: int
) -> None:
    incident = api.open_incident("Bad forms")
    with browser_client(api.url) as c:
        sign_in(c, "alice")
        resp = c.post(
            f"/console/incidents/{incident}/hold",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        assert resp.status_code == status
        assert c.get("/console/").status_code == 200
    assert "HoldDeclared" not in api.types(incident)


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/console/", "/console/\\evil", "/v1/incidents"],
)
def test_sign_in_only_returns_to_console_pages(api: Api, target: str) -> None:
    with browser_client(api.url) as c:
        form = c.get("/console/login", params={"next": target})
        token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert token is not None
        resp = c.post(
            "/console/login",
            data={"login_csrf": token.group(1), "token": TOKENS["olive"], "next": target},
        )
        assert resp.status_code == 303 and resp.headers["location"] == "/console/"


def _first_update(resp: httpx.Response) -> tuple[int | None, dict[str, Any]]:
    event_id: int | None = None
    name = None
    for line in resp.iter_lines():
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == "update":
            return event_id, json.loads(line[6:])
        elif line == "":
            event_id, name = None, None
    raise AssertionError("the stream ended without an update")


def test_the_live_stream_resumes_after_last_event_id(api: Api) -> None:
    incident = api.open_incident("Resume the stream")
    api.ok("alice", "POST", f"/v1/incidents/{incident}/hold", {"detail": "one"})
    # The hold, then the packet the packager publishes for it: the head is settled.
    ledger = api.wait_for(
        incident,
        lambda es: any(e["event"]["event_type"] == "TakeoverPacketPublished" for e in es),
        "the hold's packet",
    )
    head = ledger[-1]["sequence"]
    with browser_client(api.url) as c:
        sign_in(c, "olive")
        url = f"/console/incidents/{incident}/events"
        with c.stream("GET", url, headers={"Last-Event-ID": "1"}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            event_id, data = _first_update(resp)
        assert [r["seq"] for r in data["rows"]] == list(range(2, head + 1))
        assert event_id == head
        assert "panel-summary" in data["panels"]
        # `after` is the first connection's cursor; Last-Event-ID wins on a reconnect.
        with c.stream("GET", url, params={"after": head}) as resp:
            event_id, data = _first_update(resp)
        assert data["rows"] == [] and event_id == head
        with c.stream(
            "GET", url, params={"after": 0}, headers={"Last-Event-ID": str(head - 1)}
        ) as resp:
            _, data = _first_update(resp)
        assert [r["seq"] for r in data["rows"]] == [head]


def test_an_open_live_stream_does_not_hold_up_shutdown(
    console_stack: Pipeline, start_process: Any
) -> None:
    """uvicorn waits for open responses before stopping; a live stream never ends by itself,
    so without the console's shutdown watch every open browser would delay a stop until the
    graceful timeout and then be cancelled (which uvicorn logs)."""
    port = free_port()
    env = {**console_stack.api.env, "CONN_API_PORT": str(port)}
    replica = start_process(
        f"console-api-{uuid.uuid4().hex[:8]}",
        "conn_api",
        env=env,
        port=port,
        health_path="/readyz",
        timeout=60,
    )
    with browser_client(replica.url) as c:
        sign_in(c, "olive")
        with c.stream("GET", "/console/events") as resp:
            lines = resp.iter_lines()
            assert next(lines).startswith("retry:")
            os.killpg(replica.popen.pid, signal.SIGTERM)
            with contextlib.suppress(httpx.HTTPError):
                for _ in lines:
                    pass
    replica.popen.wait(timeout=60)
    log = replica.log_path.read_text()
    assert "Shutting down" in log
    assert "graceful shutdown exceeded" not in log


def test_over_https_the_session_cookie_is_secure_and_host_only(api: Api) -> None:
    """Behind a TLS-terminating proxy (uvicorn trusts X-Forwarded-Proto from loopback)."""
    https = {"X-Forwarded-Proto": "https"}
    with browser_client(api.url) as c:
        form = c.get("/console/login", headers=https)
        assert "Secure" in form.headers["set-cookie"]
        token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert token is not None
        c.cookies.set("conn_console_login", form.cookies["conn_console_login"])
        resp = c.post(
            "/console/login",
            data={"login_csrf": token.group(1), "token": TOKENS["olive"]},
            headers=https,
        )
        assert resp.status_code == 303
        session = next(
            h for h in resp.headers.get_list("set-cookie") if h.startswith("__Host-conn_console=")
        )
        assert "Secure" in session and "HttpOnly" in session and "SameSite=strict" in session
        assert "Path=/" in session and "Domain" not in session


def test_a_jwt_session_ends_when_the_jwt_expires(
    console_stack: Pipeline, start_process: Any, tmp_path: Any
) -> None:
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    port = free_port()
    env = {
        **console_stack.api.env,
        "CONN_API_PORT": str(port),
        "CONN_API_JWKS_FILE": str(jwks),
        "CONN_API_JWT_ISSUER": "https://idp.example",
        "CONN_API_JWT_AUDIENCE": "conn",
    }
    replica = start_process(
        f"console-api-jwt-{uuid.uuid4().hex[:8]}",
        "conn_api",
        env=env,
        port=port,
        health_path="/readyz",
        timeout=60,
    )
    claims = {
        "sub": "carol",
        "roles": ["commander"],
        "team": "incident-command",
        "iss": "https://idp.example",
        "aud": "conn",
        "exp": int(time.time()) + 4,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    with browser_client(replica.url) as c:
        resp = sign_in(c, "carol", token=token)
        assert resp.status_code == 303
        cookie = next(
            h for h in resp.headers.get_list("set-cookie") if h.startswith("conn_console=")
        )
        max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
        assert max_age <= 4
        page = c.get("/console/")
        assert page.status_code == 200 and "Signed in as <strong>carol</strong>" in page.text
        # The server ends it too (a browser could keep a cookie past Max-Age): wait for it.
        deadline = time.monotonic() + 60
        while c.get("/console/").status_code == 200:
            assert time.monotonic() < deadline, "the JWT session outlived the JWT"
            time.sleep(0.5)
        assert c.get("/console/").headers["location"].startswith("/console/login")
