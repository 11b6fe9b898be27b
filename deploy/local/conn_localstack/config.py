"""Paths and ports of the local stack.

A stack's own state (data, logs, PID files) lives under its directory: <repo>/.local,
or CONN_LOCAL_DIR (the test session's private stack uses .local/test-stack/...).
What is expensive to fetch and never written at run time is shared read-only from
the cache outside the clone (`cache_dir()`, default ~/.cache/conn, keyed by
version): the Kafka jars in <cache>/kafka-<version>/libs (`make setup` fetches them
there); PostgreSQL binaries come from the system (CONN_PG_BIN).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEPLOY_LOCAL = PACKAGE_DIR.parent
REPO_ROOT = DEPLOY_LOCAL.parent.parent
PORTS_ENV = DEPLOY_LOCAL / "ports.env"
POM = DEPLOY_LOCAL / "pom.xml"
PG_BIN = Path(os.environ.get("CONN_PG_BIN", "/usr/lib/postgresql/15/bin"))


def cache_dir() -> Path:
    """CONN_CACHE_DIR, else $XDG_CACHE_HOME/conn, else ~/.cache/conn (outside the clone)."""
    if os.environ.get("CONN_CACHE_DIR"):
        return Path(os.environ["CONN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "conn"


def kafka_version() -> str:
    """The broker version pinned in deploy/local/pom.xml."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not found:
        raise ValueError(f"no <kafka.version> in {POM}")
    return found.group(1).strip()


def kafka_libs() -> Path:
    """CONN_KAFKA_LIBS, else <cache>/kafka-<version>/libs, else (an older `make setup`)
    <repo>/.local/kafka/libs."""
    if os.environ.get("CONN_KAFKA_LIBS"):
        return Path(os.environ["CONN_KAFKA_LIBS"])
    cached = cache_dir() / f"kafka-{kafka_version()}" / "libs"
    if cached.is_dir():
        return cached
    return REPO_ROOT / ".local" / "kafka" / "libs"


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
        return kafka_libs()  # shared, read-only (not under this stack's directory)

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
    env["CONN_ENV"] = "development"  # the services default to production (and refuse dev keys)
    return env
