"""Fixtures that start Conn's own processes for integration tests: the simulated
checkout platform and the services, as real OS processes on loopback.

Loaded for every test run through `-p fixtures_services` (pyproject addopts).
Processes are started only by tests that ask for these fixtures.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".local" / "logs" / "tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A process started for a test. `kill()` is SIGKILL (crash tests)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    health_path: str | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        if self.health_path is not None:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + str(self.health_path), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        if self.popen is not None and self.alive:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None or not self.alive:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


ProcFactory = Callable[..., Proc]


@pytest.fixture
def start_process(request: pytest.FixtureRequest) -> Iterator[ProcFactory]:
    """`start_process(name, module, *args, env={}, port=None, health_path=None)` runs
    `python -m module args` in its own process group; all are stopped after the test."""
    started: list[Proc] = []
    test = request.node.name.replace("/", "_")[:80]

    def start(
        name: str,
        module: str,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        health_path: str | None = None,
        timeout: float = 30.0,
    ) -> Proc:
        proc = Proc(
            name=name,
            argv=[sys.executable, "-m", module, *args],
            env=env or {},
            log_path=LOGS / f"{test}.{name}.log",
            port=port,
            health_path=health_path,
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
