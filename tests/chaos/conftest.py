"""Fixtures of the fault suite: restarting the shared Kafka broker / PostgreSQL
server, only when this test session owns them (the local stack of
deploy/local, not services given by KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL)."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the fault suite (tests/chaos)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The full fault suite runs only when asked for (`make chaos` = `-m slow`);
    a plain `pytest` (`make test`) runs the reduced one."""
    if "slow" in (config.getoption("markexpr", "") or ""):
        return
    here = str(__file__).rsplit("/", 1)[0]
    skip = pytest.mark.skip(reason="full fault suite: run with `make chaos` (-m slow)")
    for item in items:
        if str(item.fspath).startswith(here) and item.get_closest_marker("slow"):
            item.add_marker(skip)


async def _restart(name: str, pause: float) -> float:
    """Stop and start one local-stack component; returns the downtime in seconds.
    Whatever happens, the component is started again before this returns."""
    from conn_localstack import stack_down, stack_up

    started = time.monotonic()
    try:
        stopped = await asyncio.to_thread(stack_down, [name])
        if name not in stopped:
            raise RuntimeError(f"{name} was not running under the local stack")
        await asyncio.sleep(pause)
    finally:
        await stack_up([name])
    return time.monotonic() - started


@pytest.fixture
def chaos_stack(
    kafka_bootstrap: str, database_url: str, service_sources: dict[str, str]
) -> dict[str, Any]:
    """{"kafka": restart(), "postgres": restart()} for what this session may restart,
    and "why" when something is skipped. CONN_CHAOS_NO_RESTARTS=1 skips both."""
    out: dict[str, Any] = {}
    reasons: list[str] = []
    if os.environ.get("CONN_CHAOS_NO_RESTARTS"):
        reasons.append("CONN_CHAOS_NO_RESTARTS is set")
    else:
        for name, key in (("kafka", "kafka"), ("postgres", "postgres")):
            source = service_sources.get(key)
            if source == "local":
                out[name] = functools.partial(_restart, name, 1.0)
            else:
                reasons.append(f"{name} comes from {source or 'elsewhere'} (not the local stack)")
    out["why"] = "; ".join(reasons) or "n/a"
    if reasons:
        print(f"fault suite: stack restarts limited: {out['why']}")
    return out
