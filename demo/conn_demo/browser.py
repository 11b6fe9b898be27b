"""Debian's Chromium, driven headless by Playwright's Python driver (the playwright wheel
carries its driver; `playwright install`, which downloads a browser, is never used).
Used by the console's browser tests and the README's screenshot
(tests/console/readme_screenshot.py)."""

from __future__ import annotations

import os
from typing import Any

CHROMIUM = os.environ.get("CONN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
)


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (make setup installs Debian's chromium as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright wheel is not installed (make setup)"
    return None


def launch(playwright: Any) -> Any:
    """A headless Chromium browser from a started `sync_playwright()`."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), timeout=60_000
    )
