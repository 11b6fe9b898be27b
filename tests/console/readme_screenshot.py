"""docs/console.png, the README's picture of the bridge console, from a real run (never
edited by hand): `make console-screenshot`.

Not part of the test suite (pytest collects this file only when it is named on the
command line). It runs on the console tests' own machinery: their private pipeline
(`console_stack`: its own topics, database and service processes on free ports, on the
test session's private Kafka and PostgreSQL; nothing of `make up` / `make demo` is
started, stopped or read) and their headless Chromium (`browser`).

priya, the database platform lead, has the incident page open while the demo's guided
session plays; the picture is taken at step 12, when dana's orders-db restart waits for
her approval: the approvals panel shows the decision packet and the approve and decline
forms naming its SHA-256, above it the conn holder, health per region, the authority in
force, the takeover packet and the refusals. The session then carries on to its end.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from console_support import Api, DemoPlayer, reset_to_seed_outage, sign_in

from conn_demo.browser import chromium_missing
from conn_localstack.ephemeral import Pipeline

OUT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
WIDTH, HEIGHT = 1280, 1700
DEMO_MS = 300_000
"""Bound on the wait for step 12 (the session itself waits at most 120 s per step)."""


@pytest.fixture(autouse=True)
def _chromium_required() -> None:
    """A missing browser fails here (the console tests' `browser` would skip)."""
    why = chromium_missing()
    if why is not None:
        pytest.fail(f"{why}: the screenshot needs it")


def test_write_the_readme_screenshot(api: Api, console_stack: Pipeline, browser: Any) -> None:
    reset_to_seed_outage(console_stack.simulator.url)
    incident = f"inc-{uuid.uuid4().hex[:6]}"
    page = sign_in(
        browser,
        api.url,
        "priya",
        f"/console/incidents/{incident}",
        viewport={"width": WIDTH, "height": HEIGHT},
    )
    taken = threading.Event()

    def hold_the_approval(correlation_id: str) -> None:
        # priya approves only once the picture is taken (or the bound is over).
        taken.wait(timeout=DEMO_MS / 1000)

    player = DemoPlayer(api.url, incident, before_approval=hold_the_approval)
    player.start()
    try:
        page.locator("#panel-approvals form[data-control=approve]").wait_for(timeout=DEMO_MS)
        page.evaluate("document.activeElement && document.activeElement.blur()")
        bottom = page.evaluate(  # of the approvals card, in page coordinates
            """() => document.querySelector('section[aria-labelledby=approvals-h]')
                .getBoundingClientRect().bottom + window.scrollY"""
        )
        OUT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(OUT),
            full_page=True,
            clip={"x": 0, "y": 0, "width": WIDTH, "height": float(bottom) + 12},
        )
    finally:
        taken.set()
        player.join(timeout=DEMO_MS / 1000)
    assert player.error is None, player.failure()
    print(f"wrote {OUT} (incident {incident})")
