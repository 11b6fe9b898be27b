"""`make up` starts one executor after the simulator (adapters default to it)."""

from __future__ import annotations

import os
import sys

from conn_localstack.config import port
from conn_localstack.procs import ProcessSpec
from conn_localstack.trust import dev_trust


def process_specs() -> list[ProcessSpec]:
    metrics_port = port("CONN_EXECUTOR_METRICS_PORT")
    env = {
        "CONN_EXECUTOR_ID": os.environ.get("CONN_EXECUTOR_ID", "executor-local-1"),
        **dev_trust().service_env("executor"),
    }
    if "CONN_SIMULATOR_URL" not in os.environ:
        env["CONN_SIMULATOR_URL"] = f"http://127.0.0.1:{port('CONN_SIMULATOR_PORT')}"
    return [
        ProcessSpec(
            name="executor",
            argv=[sys.executable, "-m", "conn_executor"],
            env=env,
            port=metrics_port,
            health_url=f"http://127.0.0.1:{metrics_port}/readyz",
        )
    ]
