"""Fixtures of the bridge console's tests.

- `console_stack`: one private pipeline (simulator, packager, verifier, executor,
  directive API as real processes) on its own topics and database, shared by every
  console test of the session (each test works on its own incident).
- `api`: the stack's directive API, called as a person (`console_support.Api`).
- `browser`: Debian's Chromium driven by Playwright's Python driver (`playwright install`
  is never used). Missing Chromium skips, except under CI=true, where it fails.
  Function-scoped and set up after `console_stack` on purpose: Playwright's sync API
  marks the thread's event loop as running while it is alive, so every async fixture
  must be set up before it and torn down after it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from console_support import Api

from conn_demo.browser import chromium_missing, launch
from conn_localstack.ephemeral import LOGS, Pipeline
from conn_runtime.db import temporary_database

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".local" / "artifacts" / "console"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def console_database(database_url: str) -> AsyncIterator[str]:
    async with temporary_database(database_url, prefix="console") as url:
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def console_topics(kafka_bootstrap: str, trust: Any) -> AsyncIterator[Any]:
    """The session's console topics, created as the broker's admin with the production
    ACLs of every service principal (groups prefixed like the topics), as `conn_topics`."""
    from conn_localstack.trust import dev_acls
    from conn_runtime.acls import delete_acls, ensure_acls
    from conn_runtime.settings import Topics
    from conn_runtime.topics import delete_topics, ensure_topics, topic_specs

    prefix = f"c{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    specs = topic_specs(topics, events_partitions=3)
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


@pytest.fixture(scope="session")
def console_stack(
    kafka_bootstrap: str, console_database: str, console_topics: Any, trust: Any
) -> Iterator[Pipeline]:
    """Each process logs in to Kafka as its own principal and signs with its key of the
    session's test keyring."""
    p = Pipeline(
        kafka_bootstrap=kafka_bootstrap,
        database_url=console_database,
        topic_prefix=console_topics.events.removesuffix("conn.events"),
        log_dir=LOGS / "console",
        identity=trust.env,
    )
    try:
        yield p.start()
    finally:
        p.stop()


@pytest.fixture
def api(console_stack: Pipeline) -> Api:
    return Api(console_stack.api.url)


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why + " — in CI the console's browser tests must run (make setup installs it)")
    pytest.skip(why)


@pytest.fixture
def browser(console_stack: Pipeline) -> Iterator[Any]:
    why = chromium_missing()
    if why is not None:
        _missing(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
