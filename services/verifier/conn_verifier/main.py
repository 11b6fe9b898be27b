"""Entry point: `conn-verifier` or `python -m conn_verifier`.

Configuration is environment only (`conn_verifier.settings.Settings`): KafkaSettings
(KAFKA_BOOTSTRAP_SERVERS, CONN_TOPIC_PREFIX, ...), AdapterSettings (CONN_SIMULATOR_URL,
CONN_METRICS_BACKEND, ...) and VerifierSettings (CONN_VERIFIER_*).
"""

from __future__ import annotations

import logging

from conn_runtime.service import serve
from conn_verifier.service import VerifierService
from conn_verifier.settings import Settings

log = logging.getLogger("conn_verifier")


def build() -> VerifierService:
    settings = Settings()
    if settings.verifier.settle_override_seconds is not None:
        log.warning(
            "settle window OVERRIDDEN (benchmark setting, not for incidents)",
            extra={"settle_seconds": settings.verifier.settle_override_seconds},
        )
    return VerifierService(settings.kafka, settings.verifier, settings.adapters)


def run() -> None:
    serve("verifier", build)


if __name__ == "__main__":
    run()
