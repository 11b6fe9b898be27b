"""How the local stack runs each Conn process: one `ProcessSpec` per service.

The local stack knows how to start every service; the services know nothing of it (they
read their settings from the environment, whoever starts them). `make up` starts these
after Kafka, PostgreSQL and the topics exist, in this order (the simulator first: the
executor's and the verifier's adapters default to it), with the stack env
(KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, CONN_*_PORT) plus each spec's own env: its
development broker login, keyring and signing key (`conn_localstack.trust`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from conn_localstack.config import port
from conn_localstack.procs import ProcessSpec
from conn_localstack.trust import dev_trust


def simulator() -> ProcessSpec:
    """The simulated checkout platform (scenario from CONN_SIM_SCENARIO)."""
    sim_port = port("CONN_SIMULATOR_PORT")
    return ProcessSpec(
        name="simulator",
        argv=[
            sys.executable,
            "-m",
            "conn_simulator",
            "--scenario",
            os.environ.get("CONN_SIM_SCENARIO", "seed_outage"),
            "--seed",
            os.environ.get("CONN_SIM_SEED", "7"),
            "--speed",
            os.environ.get("CONN_SIM_SPEED", "60"),
            "--port",
            str(sim_port),
        ],
        port=sim_port,
        health_url=f"http://127.0.0.1:{sim_port}/healthz",
    )


def directive_api() -> ProcessSpec:
    """The directive API on CONN_API_PORT (default 18000)."""
    api_port = port("CONN_API_PORT")
    return ProcessSpec(
        name="directive-api",
        argv=[sys.executable, "-m", "conn_api"],
        env={"CONN_API_PORT": str(api_port), **dev_trust().service_env("directive-api")},
        port=api_port,
        health_url=f"http://127.0.0.1:{api_port}/readyz",
        startup_timeout=90.0,
    )


def executor() -> ProcessSpec:
    """One executor, its adapters on the simulator unless CONN_SIMULATOR_URL says otherwise."""
    metrics_port = port("CONN_EXECUTOR_METRICS_PORT")
    env = {
        "CONN_EXECUTOR_ID": os.environ.get("CONN_EXECUTOR_ID", "executor-local-1"),
        **dev_trust().service_env("executor"),
    }
    if "CONN_SIMULATOR_URL" not in os.environ:
        env["CONN_SIMULATOR_URL"] = f"http://127.0.0.1:{port('CONN_SIMULATOR_PORT')}"
    return ProcessSpec(
        name="executor",
        argv=[sys.executable, "-m", "conn_executor"],
        env=env,
        port=metrics_port,
        health_url=f"http://127.0.0.1:{metrics_port}/readyz",
    )


def verifier() -> ProcessSpec:
    """The verifier, reading the simulator's metrics and state."""
    metrics_port = port("CONN_VERIFIER_METRICS_PORT")
    return ProcessSpec(
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


def packager() -> ProcessSpec:
    """The packager (faust worker) with its ops server on CONN_PACKAGER_METRICS_PORT."""
    ops_port = port("CONN_PACKAGER_METRICS_PORT")
    return ProcessSpec(
        name="packager",
        argv=[sys.executable, "-m", "conn_packager"],
        env={
            "CONN_PACKAGER_METRICS_PORT": str(ops_port),
            **dev_trust().service_env("packager"),
        },
        port=ops_port,
        health_url=f"http://127.0.0.1:{ops_port}/readyz",
    )


SERVICES: tuple[Callable[[], ProcessSpec], ...] = (
    simulator,
    directive_api,
    executor,
    verifier,
    packager,
)
"""Start order of the Conn processes."""


def process_specs() -> list[ProcessSpec]:
    """Every Conn process of the local stack, in start order."""
    return [spec() for spec in SERVICES]
