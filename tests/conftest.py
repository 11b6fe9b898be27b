"""Session fixtures that find real Kafka and PostgreSQL, lazily (only when a test asks),
and never touch a stack the session did not start.

Isolation first: before anything runs, the session points the local-stack machinery
(`conn_localstack`) at a PRIVATE directory and private ports:

    CONN_LOCAL_DIR = <repo>/.local/test-stack/<pid>   data, logs, PID files: its own
    CONN_*_PORT    = free loopback ports               (every port of deploy/local/ports.env)

so a `make up` / `make demo` stack running from the same checkout (in `.local/`, on
the ports of ports.env or of the caller's environment) is never stopped, restarted or
reconfigured: whatever a test does through `conn_localstack` lands on the private
stack. Kafka jars and PostgreSQL binaries are shared read-only; data and ports are not.

Resolution order, per service:
  (a) env KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL: used as given. Tests that stop or
      restart the broker or the database skip (`own_stack`): they are not ours to restart;
  (b) testcontainers, if a Docker daemon answers a ping (ours: restartable by docker);
      for Kafka only with CONN_TEST_KAFKA=docker (a PLAINTEXT broker: no SASL, no ACLs);
  (c) otherwise the private local stack, started for the session under its own
      supervisor (which exits with this process, even if it is killed) and stopped at
      the end; its directory is deleted.

Fixtures: kafka_bootstrap (str), database_url (str), fresh_database (str DSN, per test),
conn_topics (Topics with prefix and their ACLs, per test), trust (the session's test
keyring and broker logins, see kafka_support.py), local_stack_dir (Path),
service_sources (dict), own_stack (stop/start/restart "kafka" / "postgres" of the
session's own stack).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from stack_support import PRIVATE, TEST_STACKS, OwnStack, isolate, private_stack_dir, release

from conn_runtime.db import temporary_database

ROOT = Path(__file__).resolve().parents[1]
CORE_TOPICS_EVENTS_PARTITIONS = 3


# Fixtures that reach a broker, a database, the local stack, a started process (a Conn
# service, the simulator) or an external server (Prometheus, Alertmanager, Unleash, a
# Kubernetes control plane). Every fixture built on one of these (fresh_database,
# conn_topics, trust, pipeline, api, ...) needs it too: pytest's `fixturenames` is the
# closure over a test's fixtures, so one name here covers everything above it.
INTEGRATION_FIXTURES = frozenset(
    {
        "_services",  # kafka_bootstrap, database_url, service_sources
        "kafka_bootstrap",
        "database_url",
        "own_stack",
        "local_stack_dir",
        "start_process",  # fixtures_services: simulator, pipeline
        "api_process",
        "simulator_url",  # tests/adapters: a simulator process
        "prometheus_url",
        "prometheus",
        "alertmanager",
        "unleash",
        "kube",  # fixtures_kube: kube_namespace
    }
)


def pytest_configure(config: pytest.Config) -> None:
    # Conn services default to production; the tests run them (in-process and as child
    # processes, which inherit this) with development tokens, keys and secrets.
    os.environ["CONN_ENV"] = "development"
    isolate()


def needs_io(item: pytest.Item) -> bool:
    """Does this test use (directly or through another fixture) a broker, a database, the
    stack, a started process or an external server?"""
    return not INTEGRATION_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `integration` every test that needs I/O (`needs_io`), so
    `pytest -m "not integration"` (`make test-unit`) runs exactly the tests without it.
    Tests that start processes by hand (no fixture) carry the marker explicitly."""
    for item in items:
        if needs_io(item) and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)


def pytest_unconfigure(config: pytest.Config) -> None:
    iso = release()
    if iso is None:
        return
    try:
        from conn_localstack import stack_down

        stack_down()  # the private stack only (CONN_LOCAL_DIR points at it)
    finally:
        # Keep its logs for a post-mortem (.local/logs/test-stack/), drop its data.
        logs = iso.directory / "logs"
        if logs.is_dir():
            keep = ROOT / ".local" / "logs" / "test-stack"
            shutil.rmtree(keep, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.copytree(logs, keep)
        if iso.directory.resolve().parent == TEST_STACKS.resolve():  # never anything else
            shutil.rmtree(iso.directory, ignore_errors=True)
        iso.restore()


# --- where the services come from --------------------------------------------------------------


class _Services:
    """What this session is using, and what it must stop at the end."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}  # "kafka"/"postgres" -> "env" | "docker" | "private"
        self.containers: list[Any] = []
        self._docker: bool | None = None

    def docker_available(self) -> bool:
        if self._docker is None:
            self._docker = False
            if os.environ.get("CONN_TEST_NO_DOCKER"):
                return False
            try:
                import docker

                client = docker.from_env(timeout=2)
                try:
                    self._docker = bool(client.ping())
                finally:
                    client.close()
            except Exception:  # noqa: BLE001 - no daemon, no SDK config, timeout...
                self._docker = False
        return self._docker

    async def private(self, names: list[str]) -> None:
        from conn_localstack import paths, stack_up

        # Belt and braces: the private stack and nothing else.
        assert paths().root == private_stack_dir().resolve(), paths().root
        await stack_up(names)

    def close(self) -> None:
        for c in reversed(self.containers):
            with contextlib.suppress(Exception):
                c.stop()


@pytest.fixture(scope="session")
def _services() -> Iterator[_Services]:
    s = _Services()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def service_sources(_services: _Services) -> dict[str, str]:
    """Where each requested service came from: "env", "docker" or "private"."""
    return _services.sources


@pytest.fixture(scope="session")
def local_stack_dir() -> Path:
    """The session's private stack directory (never the user's `.local`)."""
    from conn_localstack import paths

    return paths().root


def kafka_from_docker() -> bool:
    """Kafka from testcontainers only on request (CONN_TEST_KAFKA=docker): that broker is
    PLAINTEXT, without SASL or ACLs, so the broker-authorization tests skip on it. By
    default the session's Kafka is the private local stack, which authenticates (SCRAM)
    and authorizes (ACLs) like production, whether or not a Docker daemon answers."""
    return os.environ.get("CONN_TEST_KAFKA") == "docker"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kafka_bootstrap(_services: _Services) -> str:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        _services.sources["kafka"] = "env"
        return env
    if kafka_from_docker() and _services.docker_available():
        from testcontainers.community.kafka import KafkaContainer

        c = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
        c.start()
        _services.containers.append(c)
        _services.sources["kafka"] = "docker"
        return str(c.get_bootstrap_server())
    from conn_localstack import kafka_bootstrap as local_bootstrap

    await _services.private(["kafka", "topics"])
    _services.sources["kafka"] = PRIVATE
    return local_bootstrap()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(_services: _Services) -> str:
    env = os.environ.get("DATABASE_URL")
    if env:
        _services.sources["postgres"] = "env"
        return env
    if _services.docker_available():
        from testcontainers.community.postgres import PostgresContainer

        c = PostgresContainer(
            "postgres:15", username="conn", password="conn", dbname="conn", driver=None
        )
        c.start()
        _services.containers.append(c)
        _services.sources["postgres"] = "docker"
        return str(c.get_connection_url())
    from conn_localstack import database_url as local_url

    await _services.private(["postgres"])
    _services.sources["postgres"] = PRIVATE
    return local_url()


# --- stopping and restarting the session's own stack (fault tests) ----------------------------


@pytest.fixture
def own_stack(kafka_bootstrap: str, database_url: str, service_sources: dict[str, str]) -> OwnStack:
    return OwnStack(service_sources)


# --- per-test resources -------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the same server; dropped after the test."""
    async with temporary_database(database_url, prefix="t") as url:
        yield url


@pytest.fixture(scope="session")
def trust(
    kafka_bootstrap: str, _services: _Services, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The session's test keyring (fresh Ed25519 keys for directive-api, executor,
    verifier, packager and example-integration) and the broker logins of the local
    stack's SCRAM principals. See tests/kafka_support.py."""
    from kafka_support import Identities, set_current

    sasl = _services.sources.get("kafka") != "docker"
    identities = Identities.create(tmp_path_factory.mktemp("trust"), sasl=sasl)
    set_current(identities)
    return identities


@pytest_asyncio.fixture(loop_scope="session")
async def conn_topics(kafka_bootstrap: str, trust: Any) -> AsyncIterator[Any]:
    """`Topics.with_prefix("t<uuid8>.")` with all four topics created (events: 3 partitions)
    and the production ACLs on them (groups prefixed the same way: `<prefix>conn-executor`)."""
    from conn_localstack.trust import dev_acls
    from conn_runtime.acls import delete_acls, ensure_acls
    from conn_runtime.settings import Topics
    from conn_runtime.topics import delete_topics, ensure_topics, topic_specs

    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    specs = topic_specs(topics, events_partitions=CORE_TOPICS_EVENTS_PARTITIONS)
    admin = trust.kafka_options("admin")
    await ensure_topics(kafka_bootstrap, specs, **admin)
    acls = dev_acls(topics, prefix) if trust.sasl else []
    await ensure_acls(kafka_bootstrap, acls, **admin)
    try:
        yield topics
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(kafka_bootstrap, [s.name for s in specs], **admin)
        with contextlib.suppress(Exception):
            await delete_acls(kafka_bootstrap, acls, **admin)
