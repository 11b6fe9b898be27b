"""`make up` plugin: run the verifier against the local stack (see conn_localstack.stack)."""

from __future__ import annotations

import sys

from conn_localstack.config import port
from conn_localstack.procs import ProcessSpec
from conn_localstack.trust import dev_trust


def process_specs() -> list[ProcessSpec]:
    metrics_port = port("CONN_VERIFIER_METRICS_PORT")
    return [
        ProcessSpec(
            name="verifier",
            argv=[sys.executable, "-m", "conn_verifier"],
            env={
                "CONN_VERIFIER_METRICS_PORT": str(metrics_port),
                "CONN_SIMULATOR_URL": f"http://127.0.0.1:{port('CONN_SIMULATOR_PORT')}",
                **dev_trust().service_env("verifier"),
            },
            port=metrics_port,
            health_url=f"http://127.0.0.1:{metrics_port}/healthz",
        )
    ]
