from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from api_support import (
    TOKENS_FILE,
    Alertmanager,
    AlertmanagerFactory,
    Api,
    running_api,
    settings_for,
)
from fixtures_services import LOGS, Proc, ProcFactory, free_port

ALERTMANAGER = os.environ.get("CONN_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")


@pytest_asyncio.fixture(loop_scope="session")
async def api(kafka_bootstrap: str, conn_topics: Any, fresh_database: str) -> AsyncIterator[Api]:
    async with running_api(settings_for(kafka_bootstrap, conn_topics, fresh_database)) as a:
        yield a


@pytest.fixture
def api_process(
    start_process: ProcFactory,
    kafka_bootstrap: str,
    conn_topics: Any,
    fresh_database: str,
    trust: Any,
) -> Proc:
    """The directive API as a real OS process on a free loopback port (ready = /readyz)."""
    port = free_port()
    return start_process(
        "directive-api",
        "conn_api",
        env={
            **trust.env("directive-api"),
            "CONN_API_HOST": "127.0.0.1",
            "CONN_API_PORT": str(port),
            "CONN_API_TOKENS_FILE": str(TOKENS_FILE),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CONN_TOPIC_PREFIX": conn_topics.events.removesuffix("conn.events"),
            "DATABASE_URL": fresh_database,
        },
        port=port,
        health_path="/readyz",
        timeout=90,
    )


@pytest.fixture
def alertmanager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlertmanagerFactory]:
    """`alertmanager(webhook_url, bearer_token)` starts Debian's prometheus-alertmanager on a
    free loopback port (no clustering) with one webhook receiver and short group timings."""
    if not (os.path.isfile(ALERTMANAGER) and os.access(ALERTMANAGER, os.X_OK)):
        found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if found is None:
            pytest.skip("prometheus-alertmanager is not installed (deploy/local/setup.d)")
        binary = found
    else:
        binary = ALERTMANAGER
    started: list[Alertmanager] = []

    def start(webhook_url: str, token: str, *, timeout: float = 30.0) -> Alertmanager:
        config = {
            "route": {
                "receiver": "conn",
                "group_by": ["alertname", "service"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1s",
            },
            "receivers": [
                {
                    "name": "conn",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {"type": "Bearer", "credentials": token}
                            },
                        }
                    ],
                }
            ],
        }
        cfg = tmp_path / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump(config))
        port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        log_path = LOGS / f"{request.node.name[:80]}.alertmanager.log"
        popen = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=info",
            ],
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        am = Alertmanager(f"http://127.0.0.1:{port}", popen, log_path)
        started.append(am)
        deadline = time.monotonic() + timeout
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"alertmanager exited early:\n{am.log_tail()}")
            try:
                if httpx.get(am.url + "/-/ready", timeout=1).status_code == 200:
                    return am
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"alertmanager not ready after {timeout}s:\n{am.log_tail()}")
            time.sleep(0.1)

    yield start
    for am in started:
        if am.popen.poll() is None:
            os.killpg(am.popen.pid, signal.SIGTERM)
            try:
                am.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(am.popen.pid, signal.SIGKILL)
                am.popen.wait(10)
