"""Helpers shared by the adapter tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SIM_TOKEN = "sim-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Sim:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self, scenario: str = "seed_outage", seed: int = 7, speed: float = 0) -> None:
        self.http.post("/sim/reset", json={"scenario": scenario, "seed": seed, "speed": speed})

    def advance(self, seconds: float) -> None:
        self.http.post("/sim/advance", json={"seconds": seconds}).raise_for_status()

    def side_effects(self) -> dict[str, int]:
        return dict(self.http.get("/sim/side-effects").json())

    def state(self) -> dict[str, object]:
        return dict(self.http.get("/sim/state").json())
