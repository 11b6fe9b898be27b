"""Helpers of the console tests: API calls as a person (the same HTTP calls the `conn`
CLI makes), signed-in browser pages, and the demo's session played while a page
watches."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console

from conn_demo.session import SessionResult, load_tokens, run_session

TOKENS = load_tokens()
WAIT_MS = 60_000
APPROVAL_RULE = """
approvals:
  - action: drain_worker_pool
    targets: [cache-invalidation]
    count: 1
    roles: [specialist, admin]
    expires_after: 900
"""
"""Appended to the checkout runbook: draining cache-invalidation needs one approver."""


class Api:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=15)

    def call(self, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {TOKENS[who]}"}
        )

    def ok(self, who: str, method: str, path: str, body: Any = None) -> Any:
        resp = self.call(who, method, path, body)
        assert resp.status_code < 300, f"{method} {path} -> {resp.status_code}: {resp.text}"
        return resp.json()

    def open_incident(self, title: str = "Checkout failing", *, authority: bool = True) -> str:
        incident = f"inc-{uuid.uuid4().hex[:8]}"
        self.ok(
            "alice",
            "POST",
            "/v1/incidents",
            {"incident_id": incident, "title": title, "service": "checkout", "severity": "sev2"},
        )
        if authority:
            self.ok(
                "alice",
                "POST",
                f"/v1/incidents/{incident}/authority",
                {"runbook": "checkout-authority"},
            )
        return incident

    def ledger(self, incident: str) -> list[dict[str, Any]]:
        return list(self.ok("alice", "GET", f"/v1/incidents/{incident}/ledger?limit=1000")["items"])

    def types(self, incident: str) -> list[str]:
        return [e["event"]["event_type"] for e in self.ledger(incident)]

    def wait_for(
        self, incident: str, until: Callable[[list[dict[str, Any]]], bool], what: str
    ) -> list[dict[str, Any]]:
        """Poll the ledger (bounded) until `until` holds; never asserts on time."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            entries = self.ledger(incident)
            if until(entries):
                return entries
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {what}: {[e['event']['event_type'] for e in entries]}"
        )

    def hand_off(self, incident: str, detail: str | None = None) -> list[dict[str, Any]]:
        """alice hands the incident off to database-platform; returns the ledger once the
        packager's handoff packet is in it."""
        body = {"to_team": "database-platform"} | ({"detail": detail} if detail else {})
        self.ok("alice", "POST", f"/v1/incidents/{incident}/handoff", body)
        return self.wait_for(
            incident,
            lambda es: any(
                e["event"]["event_type"] == "TakeoverPacketPublished"
                and e["event"]["payload"]["trigger"] == "handoff"
                for e in es
            ),
            "the handoff packet",
        )

    def packet(self, incident: str, who: str = "dana") -> dict[str, Any]:
        return dict(self.ok(who, "GET", f"/v1/incidents/{incident}/packet"))


def sign_in(browser: Any, base: str, who: str, path: str = "/console/", **context: Any) -> Any:
    """A new browser context signed in as `who`, on `path`."""
    ctx = browser.new_context(**context)
    ctx.set_default_timeout(WAIT_MS)
    page = ctx.new_page()
    page.goto(f"{base}/console/login?next={quote(path, safe='/')}")
    page.fill("#token", TOKENS[who])
    page.click("form[action='/console/login'] button[type=submit]")
    page.wait_for_url(f"{base}{path.split('?')[0]}*")
    return page


def post_by_hand(
    page: Any, base: str, incident: str, control: str, form: dict[str, str]
) -> tuple[int, str]:
    """POST `form` (and the page's CSRF token) to the incident's `control` route in the
    page's session, not through the page's own form (so no `required`, no hidden field
    filled in), then reopen the incident page: the POST's status and the flash shown."""
    resp = page.request.post(
        f"{base}/console/incidents/{incident}/{control}",
        form={"csrf": csrf_of(page), **form},
        max_redirects=0,
    )
    page.goto(f"{base}/console/incidents/{incident}")
    return resp.status, str(page.inner_text("#flash"))


def ledger_rows(page: Any) -> list[tuple[int, str]]:
    return [
        (int(seq), kind)
        for seq, kind in page.eval_on_selector_all(
            "#ledger-rows tr",
            "rows => rows.map(r => [r.dataset.seq, r.dataset.eventType])",
        )
    ]


def csrf_of(page: Any) -> str:
    return str(page.get_attribute("form[action='/console/logout'] input[name=csrf]", "value"))


def reset_to_seed_outage(simulator_url: str) -> None:
    """The simulator back at the demo's seed outage (seed 7, 60 times real time)."""
    httpx.post(
        simulator_url + "/sim/reset",
        json={"scenario": "seed_outage", "seed": 7, "speed": 60},
        timeout=10,
    ).raise_for_status()


class DemoPlayer(threading.Thread):
    """The demo's guided session (`conn_demo.session.run_session`) on `incident`, played
    in its own thread while the test's browser watches the page. After `join`:
    `session`, or `error` with the end of what the session printed in `out`."""

    def __init__(
        self, api_url: str, incident: str, before_approval: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(name="demo-session")
        self.api_url = api_url
        self.incident = incident
        self.before_approval = before_approval
        self.out = io.StringIO()
        self.session: SessionResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.session = run_session(
                self.api_url,
                console=Console(file=self.out, width=140),
                incident_id=self.incident,
                timeout=120,
                before_approval=self.before_approval,
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test (`failure`)
            self.error = exc

    def failure(self) -> str:
        return f"{self.error!r}\n{self.out.getvalue()[-3000:]}"
