"""`make up` starts the packager (faust worker) with its ops server on CONN_PACKAGER_METRICS_PORT."""

from __future__ import annotations

import sys

from conn_localstack.config import port
from conn_localstack.procs import ProcessSpec
from conn_localstack.trust import dev_trust


def process_specs() -> list[ProcessSpec]:
    ops_port = port("CONN_PACKAGER_METRICS_PORT")
    return [
        ProcessSpec(
            name="packager",
            argv=[sys.executable, "-m", "conn_packager"],
            env={
                "CONN_PACKAGER_METRICS_PORT": str(ops_port),
                **dev_trust().service_env("packager"),
            },
            port=ops_port,
            health_url=f"http://127.0.0.1:{ops_port}/readyz",
        )
    ]
