"""Driving a separate local stack (its own CONN_LOCAL_DIR and free ports) through the real
`python -m conn_localstack.cli`, as a user's `make up` / `make status` / `make down` would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _port_names() -> list[str]:
    out = []
    for line in (ROOT / "deploy" / "local" / "ports.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            out.append(line.split("=", 1)[0].strip())
    return out


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class StackCli:
    directory: Path
    env: dict[str, str]

    @classmethod
    def create(cls, directory: Path, **extra: str) -> StackCli:
        names = _port_names()
        ports = dict(zip(names, map(str, _free_ports(len(names))), strict=True))
        env = {
            **os.environ,
            **ports,
            "CONN_LOCAL_DIR": str(directory),
            # Stop it if this test process dies (the stack is ours, a stand-in for a user's).
            "CONN_STACK_EXIT_WITH": str(os.getpid()),
            **extra,
        }
        for k in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
            env.pop(k, None)
        return cls(directory, env)

    def port(self, name: str) -> int:
        return int(self.env[name])

    def run(self, *args: str, timeout: float = 300.0, check: bool = True) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "conn_localstack.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"conn_localstack.cli {' '.join(args)}: {res.returncode}\n"
                f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            )
        return res.stdout + res.stderr

    def status(self) -> dict[str, Any]:
        doc = json.loads(self.run("status", "--json", timeout=60).strip().splitlines()[-1])
        return {"supervisor": doc["supervisor"], **{r["component"]: r for r in doc["components"]}}

    def wait(self, what: str, check: Any, within: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within:.0f}s: {what}\n{json.dumps(status)}")
            time.sleep(0.5)

    @classmethod
    @contextmanager
    def temporary(cls, label: str, **extra: str) -> Iterator[StackCli]:
        """A stack in .local/test-stack/<pid>-<label>-<id> (not under /tmp/pytest-of-*:
        PostgreSQL runs as the `postgres` user, who must reach its data directory);
        `down` and its directory deleted afterwards."""
        directory = ROOT / ".local" / "test-stack" / f"{os.getpid()}-{label}-{uuid.uuid4().hex[:6]}"
        directory.mkdir(parents=True)
        stack = cls.create(directory, **extra)
        try:
            yield stack
        finally:
            stack.run("down", check=False)
            shutil.rmtree(directory, ignore_errors=True)

    def log(self, name: str) -> str:
        f = self.directory / "logs" / f"{name}.log"
        return f.read_text(errors="replace") if f.exists() else ""
