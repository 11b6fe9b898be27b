"""Entry point: `python -m conn_simulator --scenario seed_outage --seed 7 --port 18080 --speed 60`
or `conn-simulator` (env CONN_SIMULATOR_PORT, CONN_SIM_SCENARIO, CONN_SIM_SEED, CONN_SIM_SPEED,
CONN_SIM_HOST, CONN_SIM_API_TOKEN)."""

from __future__ import annotations

import argparse
import os

import uvicorn

from conn_simulator.app import create_app


def run(argv: list[str] | None = None) -> None:
    env = os.environ
    parser = argparse.ArgumentParser(prog="conn-simulator", description=__doc__)
    parser.add_argument("--scenario", default=env.get("CONN_SIM_SCENARIO", "seed_outage"))
    parser.add_argument("--seed", type=int, default=int(env.get("CONN_SIM_SEED", "7")))
    parser.add_argument("--speed", type=float, default=float(env.get("CONN_SIM_SPEED", "60")))
    parser.add_argument("--host", default=env.get("CONN_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("CONN_SIMULATOR_PORT", "18080")))
    parser.add_argument(
        "--token",
        default=env.get("CONN_SIM_API_TOKEN", "sim-admin-token"),
        help="API token required on the flag and orchestration APIs ('' = none)",
    )
    args = parser.parse_args(argv)
    app = create_app(args.scenario, args.seed, args.speed, token=args.token or None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run()
