"""Ephemeral Conn processes for tests, the fault suite and benchmarks.

Unlike `make up` (long-lived, PID-filed processes on fixed ports), a `Pipeline`
runs the simulator and the four services as child processes on free ports,
against an isolated set of topics (a unique `CONN_TOPIC_PREFIX`, its own consumer
groups) and a database of its own, so several can run side by side and any of
them can be SIGKILLed and restarted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]
LOGS = ROOT / ".local" / "logs" / "ephemeral"
DEV_TOKENS_FILE = ROOT / "deploy" / "local" / "tokens.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A child process in its own process group. `kill()` is SIGKILL (a crash)."""

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
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
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

    def restart(self, timeout: float = 30.0) -> Proc:
        self.stop()
        return self.start(timeout)


def python_proc(
    name: str,
    module: str,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    health_path: str | None = None,
    log_dir: Path = LOGS,
) -> Proc:
    return Proc(
        name=name,
        argv=[sys.executable, "-m", module, *args],
        env=env or {},
        log_path=log_dir / f"{name}.log",
        port=port,
        health_path=health_path,
    )


@dataclass
class Pipeline:
    """The simulator and the four services wired to one isolated set of topics."""

    kafka_bootstrap: str
    database_url: str
    topic_prefix: str
    scenario: str = "seed_outage"
    seed: int = 7
    speed: float = 60.0
    executors: int = 1
    log_dir: Path = LOGS
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    identity: Callable[[str], dict[str, str]] | None = None
    """principal -> env vars of its Kafka login, keyring and signing key (default: the
    local stack's dev trust material, `conn_localstack.trust`)."""

    def identity_env(self, principal: str) -> dict[str, str]:
        if self.identity is not None:
            return self.identity(principal)
        from conn_localstack.trust import dev_trust

        return dev_trust().service_env(principal)

    def base_env(self) -> dict[str, str]:
        p = self.topic_prefix
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "DATABASE_URL": self.database_url,
            "CONN_TOPIC_PREFIX": p,
            "CONN_ENV": "development",
            "CONN_API_TOKENS_FILE": str(DEV_TOKENS_FILE),
            "CONN_EXECUTOR_GROUP_ID": f"{p}conn-executor",
            "CONN_VERIFIER_GROUP_ID": f"{p}conn-verifier",
            "CONN_READ_SCHEMA": f"read_{p.strip('.').replace('-', '_')}" if p else "conn_read",
            "CONN_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    @property
    def api(self) -> Proc:
        return self.procs["api"]

    @property
    def simulator(self) -> Proc:
        return self.procs["simulator"]

    def executor(self, index: int = 0) -> Proc:
        return self.procs[f"executor-{index}"]

    def _proc(
        self,
        name: str,
        module: str,
        *args: str,
        port_var: str | None,
        health: str,
        principal: str,
    ) -> Proc:
        port = free_port()
        env = {**self.base_env(), **self.identity_env(principal)}
        if port_var:
            env[port_var] = str(port)
        if "simulator" in self.procs:
            env["CONN_SIMULATOR_URL"] = self.procs["simulator"].url
        proc = python_proc(
            f"{self.topic_prefix}{name}",
            module,
            *args,
            env=env,
            port=port,
            health_path=health,
            log_dir=self.log_dir,
        )
        self.procs[name] = proc
        return proc

    def add_executor(self, timeout: float = 60.0) -> Proc:
        index = sum(1 for n in self.procs if n.startswith("executor-"))
        proc = self._proc(
            f"executor-{index}",
            "conn_executor",
            port_var="CONN_EXECUTOR_METRICS_PORT",
            health="/readyz",
            principal="executor",
        )
        proc.env["CONN_EXECUTOR_ID"] = f"{self.topic_prefix}executor-{index}"
        return proc.start(timeout)

    def start(self, timeout: float = 60.0) -> Pipeline:
        sim_port = free_port()
        sim = python_proc(
            f"{self.topic_prefix}simulator",
            "conn_simulator",
            "--scenario",
            self.scenario,
            "--seed",
            str(self.seed),
            "--speed",
            str(self.speed),
            "--port",
            str(sim_port),
            port=sim_port,
            health_path="/healthz",
            log_dir=self.log_dir,
        )
        self.procs["simulator"] = sim
        sim.start(timeout)
        self._proc(
            "packager",
            "conn_packager",
            port_var="CONN_PACKAGER_METRICS_PORT",
            health="/readyz",
            principal="packager",
        ).start(timeout)
        self._proc(
            "verifier",
            "conn_verifier",
            port_var="CONN_VERIFIER_METRICS_PORT",
            health="/readyz",
            principal="verifier",
        ).start(timeout)
        for _ in range(self.executors):
            self.add_executor(timeout)
        self._proc(
            "api", "conn_api", port_var="CONN_API_PORT", health="/readyz", principal="directive-api"
        ).start(timeout)
        return self

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def side_effects(self) -> dict[str, int]:
        resp = httpx.get(self.simulator.url + "/sim/side-effects", timeout=5)
        resp.raise_for_status()
        data = resp.json()
        return {str(k): int(v) for k, v in (data.get("side_effects", data)).items()}
