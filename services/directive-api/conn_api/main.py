"""Entry point: `conn-directive-api` / `python -m conn_api` (uvicorn, one worker)."""

from __future__ import annotations

from conn_api.config import Settings
from conn_runtime.service import AsgiService, serve


def build() -> AsgiService:
    settings = Settings()
    from conn_api.app import create_app

    return AsgiService(
        create_app(settings), host=settings.api.conn_api_host, port=settings.api.conn_api_port
    )


def run() -> None:
    serve("directive-api", build)


if __name__ == "__main__":
    run()
