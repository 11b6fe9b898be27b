"""Entry point: `conn-executor` / `python -m conn_executor`."""

from __future__ import annotations

import asyncio
import logging
import sys

from pydantic import ValidationError

from conn_adapters.config import AdapterSettings
from conn_executor.service import ExecutorService
from conn_executor.settings import ExecutorSettings
from conn_runtime import logs
from conn_runtime.ops import run_until_signalled
from conn_runtime.settings import DatabaseSettings, KafkaSettings
from conn_runtime.trust import TrustConfigError

log = logging.getLogger("conn_executor")

Config = tuple[KafkaSettings, DatabaseSettings, AdapterSettings, ExecutorSettings]


def load_config() -> Config:
    return KafkaSettings(), DatabaseSettings(), AdapterSettings(), ExecutorSettings()


async def serve(config: Config) -> None:
    # aiokafka clients must be created inside the running loop.
    service = ExecutorService(*config)
    await run_until_signalled(service.run)


def run() -> None:
    logs.configure("executor")
    try:
        config = load_config()
    except (ValidationError, ValueError) as exc:
        message = str(exc).replace("\n", " ")
        log.error("invalid configuration", extra={"error": message})
        print(f"conn-executor: invalid configuration: {message}", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    except TrustConfigError as exc:  # no signing key, not in the keyring, wrong role...
        log.error("invalid configuration", extra={"error": str(exc)})
        print(f"conn-executor: invalid configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        log.error("cannot reach a dependency", extra={"error": repr(exc)})
        sys.exit(1)


if __name__ == "__main__":
    run()
