"""Helpers of the console tests: API calls as a person (the same HTTP calls the `conn`
CLI makes), and signed-in browser pages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from conn_demo.session import load_tokens

TOKENS = load_tokens()
WAIT_MS = 60_000


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
