"""`make up` starts the simulated checkout platform (scenario from CONN_SIM_SCENARIO)."""

from __future__ import annotations

import os
import sys

from conn_localstack.config import port
from conn_localstack.procs import ProcessSpec


def process_specs() -> list[ProcessSpec]:
    sim_port = port("CONN_SIMULATOR_PORT")
    return [
        ProcessSpec(
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
    ]
