"""Entry point: `conn-directive-api` / `python -m conn_api` (uvicorn, one worker).

`serve` runs it on uvloop with the collector's thresholds raised, like every service
(`conn_runtime.service.serve`); the API's app also freezes its heap once its fold has
caught up (`conn_api.runtime.settle_heap`)."""

from __future__ import annotations

from conn_api.config import Settings
from conn_runtime.service import AsgiService, serve


def build() -> AsgiService:
    settings = Settings()
    from conn_api.app import create_app

    return AsgiService(
        create_app(settings, settle_heap=True),
        host=settings.api.conn_api_host,
        port=settings.api.conn_api_port,
    )


def run() -> None:
    serve("directive-api", build)


if __name__ == "__main__":
    run()
