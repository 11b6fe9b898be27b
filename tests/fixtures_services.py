"""Fixtures that start Conn's own processes for integration tests: the simulated
checkout platform, single services, or the whole pipeline, as real OS processes
on loopback (see `conn_localstack.ephemeral`).

Loaded for every test run through `-p fixtures_services` (pyproject addopts).
Processes are started only by tests that ask for these fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conn_localstack.ephemeral import LOGS, Pipeline, Proc, free_port, python_proc
from conn_runtime.settings import Topics

__all__ = ["Proc", "free_port"]

ProcFactory = Callable[..., Proc]


def _log_dir(request: pytest.FixtureRequest) -> Path:
    return LOGS / request.node.name.replace("/", "_")[:80]


@pytest.fixture
def start_process(request: pytest.FixtureRequest) -> Iterator[ProcFactory]:
    """`start_process(name, module, *args, env={}, port=None, health_path=None)` runs
    `python -m module args` in its own process group; all are stopped after the test."""
    started: list[Proc] = []
    log_dir = _log_dir(request)

    def start(
        name: str,
        module: str,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        health_path: str | None = None,
        timeout: float = 30.0,
    ) -> Proc:
        proc = python_proc(
            name, module, *args, env=env, port=port, health_path=health_path, log_dir=log_dir
        )
        started.append(proc)
        return proc.start(timeout)

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def simulator(start_process: ProcFactory) -> Callable[..., Proc]:
    """`simulator(scenario="seed_outage", seed=7, speed=60.0)` starts the simulated
    checkout platform on a free port and returns its Proc (`.url`)."""

    def start(scenario: str = "seed_outage", seed: int = 7, speed: float = 60.0) -> Proc:
        port = free_port()
        return start_process(
            f"simulator-{scenario}",
            "conn_simulator",
            "--scenario",
            scenario,
            "--seed",
            str(seed),
            "--speed",
            str(speed),
            "--port",
            str(port),
            port=port,
            health_path="/healthz",
        )

    return start


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    fresh_database: str,
    conn_topics: Topics,
    trust: Any,
) -> Iterator[Callable[..., Pipeline]]:
    """`pipeline(scenario="seed_outage", executors=1, env=..., keyring=...)` starts the simulator,
    packager, verifier, executor(s) and directive API on this test's own topics
    and database, each logged in to Kafka as its own principal and signing with its
    key of the session's test keyring; everything is stopped after the test."""
    started: list[Pipeline] = []
    prefix = conn_topics.events.removesuffix("conn.events")

    def start(
        scenario: str = "seed_outage",
        *,
        executors: int = 1,
        speed: float = 60.0,
        seed: int = 7,
        env: dict[str, str] | None = None,
        keyring: Path | None = None,
    ) -> Pipeline:
        def identity(principal: str) -> dict[str, str]:
            own: dict[str, str] = trust.env(principal)
            if keyring is None:
                return own
            return {**own, "CONN_KEYRING_FILE": str(keyring)}  # verify against this one

        p = Pipeline(
            kafka_bootstrap=kafka_bootstrap,
            database_url=fresh_database,
            topic_prefix=prefix,
            scenario=scenario,
            seed=seed,
            speed=speed,
            executors=executors,
            log_dir=_log_dir(request),
            extra_env=env or {},
            identity=identity,
        )
        started.append(p)
        return p.start()

    yield start
    for p in started:
        p.stop()
