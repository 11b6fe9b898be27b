"""The README's screenshot of the bridge console, from a real run (never edited by hand).

    .venv/bin/python -m conn_demo.screenshot [--out docs/console.png]

Starts the local stack (like `make demo`), resets the simulator to the seed outage, opens
the incident page in headless Chromium as dana (database-platform) before the incident
exists, plays the demo's guided session while the page follows it live, and captures the
page at the end of the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import threading
import uuid
from pathlib import Path

import httpx
from rich.console import Console

from conn_demo.browser import chromium_missing, launch
from conn_demo.session import ROOT, SessionResult, load_tokens, run_session
from conn_localstack.config import port
from conn_localstack.stack import stack_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1700)
    args = parser.parse_args(argv)
    why = chromium_missing()
    if why:
        print(f"conn_demo.screenshot: {why}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    asyncio.run(stack_up(echo=lambda line: print(f"   {line}")))
    api = f"http://127.0.0.1:{port('CONN_API_PORT')}"
    sim = f"http://127.0.0.1:{port('CONN_SIMULATOR_PORT')}"
    httpx.post(
        f"{sim}/sim/reset", json={"scenario": "seed_outage", "seed": 7, "speed": 60}, timeout=10
    ).raise_for_status()
    tokens = load_tokens()
    incident = f"inc-{uuid.uuid4().hex[:6]}"
    results: list[SessionResult | BaseException] = []

    def play() -> None:
        try:
            out = Console(file=io.StringIO(), width=140)
            results.append(run_session(api, console=out, incident_id=incident, timeout=120))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.set_default_timeout(180_000)
            page.goto(f"{api}/console/login?next=/console/incidents/{incident}")
            page.fill("#token", tokens["dana"])
            page.click("form[action='/console/login'] button[type=submit]")
            page.wait_for_url(f"**/console/incidents/{incident}")
            player = threading.Thread(target=play, name="demo-session")
            player.start()
            page.wait_for_selector('#ledger-rows tr[data-event-type="TakeoverAccepted"]')
            player.join()
            if results and isinstance(results[0], BaseException):
                raise results[0]
            page.locator("#panel-summary").get_by_text("dana (database-platform)").wait_for()
            page.evaluate("document.activeElement && document.activeElement.blur()")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
        finally:
            browser.close()
    print(f"wrote {args.out} (incident {incident})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
