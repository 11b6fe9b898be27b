"""The test session's private stack: isolation (a private directory and private ports,
applied before any test runs) and `OwnStack`, the only way fault tests stop or restart
Kafka / PostgreSQL. Used by tests/conftest.py (see its docstring) and the fault tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_STACKS = ROOT / ".local" / "test-stack"
PRIVATE = "private"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_names() -> list[str]:
    names = []
    for line in (ROOT / "deploy" / "local" / "ports.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.append(line.split("=", 1)[0].strip())
    return names


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_private_stacks() -> None:
    """Directories of earlier sessions that are gone (their supervisors exit with them)."""
    if not TEST_STACKS.is_dir():
        return
    for d in TEST_STACKS.iterdir():
        owner = d.name.split("-", 1)[0]  # <pid> or <pid>-<label>-<id>
        if owner.isdigit() and not _pid_alive(int(owner)):
            shutil.rmtree(d, ignore_errors=True)


@dataclass
class _Isolation:
    directory: Path
    ports: dict[str, int]
    saved: dict[str, str | None] = field(default_factory=dict)

    def apply(self) -> None:
        env = {
            "CONN_LOCAL_DIR": str(self.directory),
            "CONN_STACK_EXIT_WITH": str(os.getpid()),
            **{k: str(v) for k, v in self.ports.items()},
        }
        for k, v in env.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def restore(self) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_ISOLATION: _Isolation | None = None


def isolate() -> _Isolation:
    """Point conn_localstack at a private directory and free ports (idempotent)."""
    global _ISOLATION
    if _ISOLATION is None:
        _sweep_stale_private_stacks()
        names = _port_names()
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        _ISOLATION = _Isolation(TEST_STACKS / str(os.getpid()), ports)
        _ISOLATION.apply()
    return _ISOLATION


def release() -> _Isolation | None:
    global _ISOLATION
    iso, _ISOLATION = _ISOLATION, None
    return iso


def private_stack_dir() -> Path:
    """The session's private stack directory (what CONN_LOCAL_DIR points at)."""
    assert _ISOLATION is not None, "the session's isolation was not applied"
    return _ISOLATION.directory


class OwnStack:
    """Stop / start / restart "kafka" or "postgres", only on the stack this session
    started itself (the private local stack). `available(name)` says whether it may,
    `why` why not."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources
        self.reasons: dict[str, str] = {}
        for name in ("kafka", "postgres"):
            source = sources.get(name)
            if os.environ.get("CONN_CHAOS_NO_RESTARTS"):
                self.reasons[name] = "CONN_CHAOS_NO_RESTARTS is set"
            elif source == "env":
                var = "KAFKA_BOOTSTRAP_SERVERS" if name == "kafka" else "DATABASE_URL"
                self.reasons[name] = (
                    f"{name} comes from {var}: not a stack this session started, "
                    "so it is never stopped or restarted"
                )
            elif source != PRIVATE:
                self.reasons[name] = (
                    f"{name} comes from {source or 'elsewhere'}, not the private stack"
                )

    def available(self, name: str) -> bool:
        return name not in self.reasons

    @property
    def why(self) -> str:
        return "; ".join(self.reasons.values()) or "n/a"

    def require(self, *names: str) -> None:
        missing = [self.reasons[n] for n in names if n in self.reasons]
        if missing:
            pytest.skip("fault test needs a stack of its own: " + "; ".join(missing))

    def _check(self, name: str) -> None:
        from conn_localstack import paths

        if not self.available(name):
            raise RuntimeError(f"refusing to touch {name}: {self.reasons[name]}")
        if paths().root != private_stack_dir().resolve():
            raise RuntimeError(f"refusing: {paths().root} is not this session's private stack")

    async def stop(self, name: str) -> None:
        from conn_localstack import stack_down

        self._check(name)
        stopped = await asyncio.to_thread(stack_down, [name])
        if name not in stopped:
            raise RuntimeError(f"{name} was not running in the private stack")

    async def start(self, name: str) -> None:
        from conn_localstack import stack_up

        self._check(name)
        await stack_up([name])

    async def restart(self, name: str, pause: float = 1.0) -> float:
        """Stop and start; returns the downtime in seconds. Started again whatever happens."""
        started = time.monotonic()
        try:
            await self.stop(name)
            await asyncio.sleep(pause)
        finally:
            if self.available(name):
                await self.start(name)
        return time.monotonic() - started
