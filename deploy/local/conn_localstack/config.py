"""Paths and ports of the local stack. Everything lives under <repo>/.local."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEPLOY_LOCAL = PACKAGE_DIR.parent
REPO_ROOT = DEPLOY_LOCAL.parent.parent
PORTS_ENV = DEPLOY_LOCAL / "ports.env"
PG_BIN = Path(os.environ.get("CONN_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _defaults() -> dict[str, str]:
    out: dict[str, str] = {}
    if PORTS_ENV.exists():
        for line in PORTS_ENV.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def port(name: str) -> int:
    """`port("CONN_KAFKA_PORT")`: env var, else deploy/local/ports.env."""
    return int(os.environ.get(name) or _defaults()[name])


@dataclass(frozen=True)
class Paths:
    root: Path  # the .local directory

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kafka(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka / "libs"

    @property
    def kafka_config(self) -> Path:
        return self.kafka / "config"

    @property
    def kafka_data(self) -> Path:
        return self.kafka / "data"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def pg_data(self) -> Path:
        return self.postgres / "data"

    @property
    def pg_run(self) -> Path:
        return self.postgres / "run"

    def ensure(self) -> None:
        for d in (self.run, self.logs):
            d.mkdir(parents=True, exist_ok=True)


def paths() -> Paths:
    """CONN_LOCAL_DIR overrides <repo>/.local."""
    return Paths(Path(os.environ.get("CONN_LOCAL_DIR") or REPO_ROOT / ".local").resolve())


def kafka_bootstrap() -> str:
    return f"127.0.0.1:{port('CONN_KAFKA_PORT')}"


def database_url() -> str:
    return f"postgresql://conn:conn@127.0.0.1:{port('CONN_POSTGRES_PORT')}/conn"


def stack_env() -> dict[str, str]:
    """Env vars every process started by the stack gets (contract of conn_runtime.settings)."""
    env = {k: str(port(k)) for k in _defaults()}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap()
    env["DATABASE_URL"] = database_url()
    return env
