"""The ops side of every service: /healthz, /readyz and /metrics on one small
HTTP server, and a runner that shuts down gracefully on SIGTERM/SIGINT.

/healthz (liveness) answers 200 while the process works, including while it
waits for a dependency that is away; 503 only when an operation registered with
the service's `Watchdog` made no progress for its `stale_after` seconds (a
wedged process: restarting it is the cure).

/readyz (readiness) answers 200 only when every dependency is there (Kafka,
PostgreSQL: probed in the background and reported by failing operations, see
`conn_runtime.resilience.Dependencies`) and every service check passes
(consumer running, fold caught up); else 503 with `Retry-After`, the failing
checks, and `missing`: the dependencies that are away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conn_runtime.resilience import Dependencies, Watchdog

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
RETRY_AFTER_SECONDS = 2


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        deps: Dependencies | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.deps = deps or Dependencies()
        self.watchdog = watchdog or Watchdog()
        self.checks: dict[str, ReadinessCheck] = {}
        self._runner: web.AppRunner | None = None

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def _healthz(self, _: web.Request) -> web.Response:
        stalled = self.watchdog.stalled()
        if stalled:
            return web.json_response(
                {
                    "status": "wedged",
                    "stalled": stalled,
                    "after_seconds": self.watchdog.stale_after,
                },
                status=503,
            )
        return web.json_response({"status": "ok"})

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        if not self.deps.monitoring:  # no background monitor: probe now
            await self.deps.check()
        results: dict[str, bool] = {n: self.deps.state(n).up for n in self.deps.names}
        for name, check in self.checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), timeout=2))
            except Exception:  # noqa: BLE001 - a failing check is "not ready", never a 500
                results[name] = False
        ready = all(results.values())
        body: dict[str, Any] = {
            "status": "ready" if ready else "not_ready",
            "checks": results,
            "missing": self.deps.missing(),
            "dependencies": self.deps.as_json(),
        }
        return ready, body

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, body = await self.readiness()
        if ready:
            return web.json_response(body)
        return web.json_response(
            body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )

    async def _metrics(self, _: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("ops server listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)`; SIGTERM/SIGINT set `stop`, and `main` should then wind
    down (finish the record in hand, commit, close clients) and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await main(stop)
    log.info("stopped")


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


async def kafka_ready(bootstrap: str) -> bool:
    """Readiness probe: does any bootstrap server accept a TCP connection?"""
    for host, port in _hosts(bootstrap):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.5)
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False
