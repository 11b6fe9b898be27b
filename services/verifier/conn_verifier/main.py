"""Entry point: `conn-verifier` or `python -m conn_verifier`.

Configuration is environment only: KafkaSettings (KAFKA_BOOTSTRAP_SERVERS,
CONN_TOPIC_PREFIX, ...), AdapterSettings (CONN_SIMULATOR_URL,
CONN_METRICS_BACKEND, ...) and VerifierSettings (CONN_VERIFIER_*).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from conn_adapters.config import AdapterSettings
from conn_runtime import logs
from conn_runtime.ops import run_until_signalled
from conn_runtime.settings import KafkaSettings
from conn_verifier.service import VerifierService
from conn_verifier.settings import VerifierSettings

log = logging.getLogger("conn_verifier")


def _configuration_error(message: str) -> None:
    print(f"conn-verifier: invalid configuration: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_settings() -> tuple[KafkaSettings, VerifierSettings, AdapterSettings]:
    try:
        kafka = KafkaSettings()
        settings = VerifierSettings()
        adapters = AdapterSettings()
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        _configuration_error("; ".join(lines))
        raise  # unreachable
    if settings.settle_override_seconds is not None:
        log.warning(
            "settle window OVERRIDDEN (benchmark setting, not for incidents)",
            extra={"settle_seconds": settings.settle_override_seconds},
        )
    return kafka, settings, adapters


def run() -> None:
    logs.configure("verifier")
    kafka, settings, adapters = load_settings()

    async def main(stop: asyncio.Event) -> None:
        # aiokafka clients must be created inside the running event loop.
        await VerifierService(kafka, settings, adapters).run(stop)

    try:
        asyncio.run(run_until_signalled(main))
    except KeyboardInterrupt:
        pass
    except ValueError as exc:  # e.g. adapter configuration rejected at start-up
        _configuration_error(str(exc))
    except (OSError, KafkaError) as exc:  # ops port taken, Kafka unreachable...
        print(f"conn-verifier: cannot start: {exc!r}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    run()
