"""`make up` plugin: run the directive API on CONN_API_PORT (default 18000)."""

from __future__ import annotations

import sys

from conn_localstack.config import port
from conn_localstack.procs import ProcessSpec
from conn_localstack.trust import dev_trust


def process_specs() -> list[ProcessSpec]:
    api_port = port("CONN_API_PORT")
    return [
        ProcessSpec(
            name="directive-api",
            argv=[sys.executable, "-m", "conn_api"],
            env={"CONN_API_PORT": str(api_port), **dev_trust().service_env("directive-api")},
            port=api_port,
            health_url=f"http://127.0.0.1:{api_port}/readyz",
            startup_timeout=90.0,
        )
    ]
