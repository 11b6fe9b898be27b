"""Fixtures for the verifier's integration tests: the verifier process, a real
Prometheus scraping a given simulator (factory)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fixtures_services import Proc, ProcFactory, free_port
from kafka_support import Identities, LedgerWriter
from verifier_support import short_runbook

from conn_runtime.settings import Topics


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    return short_runbook(tmp_path)


@pytest_asyncio.fixture(loop_scope="session")
async def producer(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> AsyncIterator[LedgerWriter]:
    """Writes what the API and an executor would, each signed as its rightful principal."""
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as writer:
        yield writer


@pytest.fixture
def verifier(
    start_process: ProcFactory, kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> Callable[..., Proc]:
    """`verifier(sim_url, **env)` starts `python -m conn_verifier` on this test's topics
    (its own consumer group) and returns the Proc once /healthz answers."""

    def start(sim_url: str, name: str = "verifier", **env: str) -> Proc:
        port = free_port()
        prefix = conn_topics.events.removesuffix("conn.events")
        return start_process(
            name,
            "conn_verifier",
            env={
                **trust.env("verifier"),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "CONN_TOPIC_PREFIX": prefix,
                "CONN_SIMULATOR_URL": sim_url,
                "CONN_VERIFIER_METRICS_PORT": str(port),
                "CONN_VERIFIER_GROUP_ID": f"{prefix}conn-verifier",
                **env,
            },
            port=port,
            health_path="/healthz",
        )

    return start


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """`prometheus(target_url)` -> URL of a real Prometheus scraping that target every 1s.
    (Same setup as tests/adapters/conftest.py's session fixture, per target.)"""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus binary not installed (run `make setup`)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_url: str) -> str:
        tmp = tmp_path / f"prometheus-{len(procs)}"
        tmp.mkdir()
        target = target_url.removeprefix("http://")
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: conn-simulator\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = free_port()
        log = (tmp / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(tmp / 'prometheus.log').read_text()}")
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus not ready after 30s")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
