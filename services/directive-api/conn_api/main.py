"""Entry point: `conn-directive-api` / `python -m conn_api` (uvicorn, one worker)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from conn_api.config import ConfigError, Settings
from conn_runtime import logs

log = logging.getLogger("conn_api")


def run() -> None:
    logs.configure("directive-api")
    try:
        settings = Settings()
        from conn_api.app import create_app

        app = create_app(settings)
    except (ConfigError, ValueError) as exc:
        log.error("invalid configuration", extra={"error": str(exc)})
        print(f"conn-directive-api: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=settings.api.conn_api_host,
        port=settings.api.conn_api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    run()
