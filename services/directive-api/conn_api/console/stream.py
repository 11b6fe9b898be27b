"""Server-sent events: the live ledger and panels, straight from the API's fold.

A stream looks at the fold every CONN_CONSOLE_STREAM_TICK_SECONDS (a read of memory, no
I/O) and sends one `update` event whenever the incident's ledger head or the kill switch
moved: the new ledger rows (each `id:` is the ledger sequence, so a reconnecting
EventSource resumes with `Last-Event-ID`) and every panel whose HTML changed. It re-checks
the session now and then (a signed-out or expired session ends the stream) and sends a
comment as a heartbeat.

Shutdown: uvicorn waits for open responses before it stops, and an event stream never
ends by itself, so the first stream chains a handler onto SIGTERM/SIGINT (after uvicorn's
own) that tells every stream to finish.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

from prometheus_client import Gauge

STREAMS_OPEN = Gauge(
    "conn_console_streams_open", "Live console streams (server-sent events) now open", ["view"]
)

SHUTTING_DOWN = threading.Event()
_installed = False


def install_shutdown_watch() -> None:
    """Chain onto the current SIGTERM/SIGINT handlers (once; main thread only)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            SHUTTING_DOWN.set()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread of the interpreter after all
            return


def event(name: str, data: dict[str, Any], event_id: int | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {name}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


Poll = Callable[[], Awaitable[tuple[str | None, bool]]]
"""Called every tick: (an SSE chunk to send or None, whether to stop)."""


async def run(
    poll: Poll,
    *,
    still_signed_in: Callable[[], Awaitable[bool]],
    tick: float,
    heartbeat: float,
    recheck: float,
    view: str,
) -> AsyncIterator[str]:
    """The stream; ends on sign-out, shutdown, a stopped runtime or the client leaving
    (the server cancels it)."""
    install_shutdown_watch()
    gauge = STREAMS_OPEN.labels(view=view)
    gauge.inc()
    try:
        yield "retry: 2000\n\n"
        last_sent = last_check = time.monotonic()
        while not SHUTTING_DOWN.is_set():
            now = time.monotonic()
            if now - last_check >= recheck:
                last_check = now
                if not await still_signed_in():
                    yield event("signed-out", {})
                    return
            chunk, stop = await poll()
            if chunk is not None:
                last_sent = now
                yield chunk
            elif now - last_sent >= heartbeat:
                last_sent = now
                yield ": keep-alive\n\n"
            if stop:
                return
            await asyncio.sleep(tick)
    finally:
        gauge.dec()
