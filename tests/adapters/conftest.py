"""Processes the adapter contract tests run against: the simulator (always), a real
Prometheus and a real Unleash (installed by `make setup`; skipped only when absent)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from adapter_support import ROOT, Sim, free_port, stop, wait_http


@pytest.fixture(scope="session")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "simulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conn_simulator", "--port", str(port), "--speed", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc, 30, log)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def sim(simulator_url: str) -> Iterator[Sim]:
    s = Sim(simulator_url)
    s.reset()
    yield s
    s.http.close()


@pytest.fixture(scope="session")
def prometheus_url(simulator_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus binary not installed (run `make setup`)")
    tmp = tmp_path_factory.mktemp("prometheus")
    target = simulator_url.removeprefix("http://")
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: conn-simulator\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/-/ready", proc, 30, log)
        yield url
    finally:
        stop(proc)


UNLEASH_DIR = ROOT / ".local" / "unleash"


@pytest.fixture
def unleash(fresh_database: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, admin token) of a real unleash-server on a fresh database."""
    node = shutil.which("node")
    if node is None or not (UNLEASH_DIR / "node_modules" / "unleash-server").is_dir():
        pytest.skip("unleash-server not installed (run `make setup`: setup.d/20-unleash.sh)")
    port, token = free_port(), "*:*.conn-test-admin-token"
    env = os.environ | {
        "DATABASE_URL": fresh_database,
        "DATABASE_SSL": "false",
        "PORT": str(port),
        "INIT_ADMIN_API_TOKENS": token,
        "LOG_LEVEL": "warn",
        "UNLEASH_TELEMETRY_DISABLED": "true",
        "CHECK_VERSION": "false",
        "SEND_TELEMETRY": "false",
    }
    log = tmp_path / "unleash.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [node, "server.js"], cwd=UNLEASH_DIR, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, 90, log)
        yield url, token
    finally:
        stop(proc)
