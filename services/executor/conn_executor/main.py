"""Entry point: `conn-executor` / `python -m conn_executor`."""

from __future__ import annotations

from conn_executor.service import ExecutorService
from conn_executor.settings import Settings
from conn_runtime.service import serve


def build() -> ExecutorService:
    settings = Settings()
    return ExecutorService(settings.kafka, settings.database, settings.adapters, settings.executor)


def run() -> None:
    serve("executor", build)


if __name__ == "__main__":
    run()
