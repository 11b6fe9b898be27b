"""Fixtures of the fault suite: restarting the Kafka broker / PostgreSQL server of the
session's own (private) stack only, never services given by KAFKA_BOOTSTRAP_SERVERS /
DATABASE_URL nor a `make up` stack (see `own_stack` in tests/conftest.py)."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from stack_support import OwnStack


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


@pytest.fixture
def chaos_stack(own_stack: OwnStack) -> dict[str, Any]:
    """{"kafka": restart(), "postgres": restart()} for what this session may restart
    (its own private stack), and "why" when something is skipped."""
    out: dict[str, Any] = {}
    for name in ("kafka", "postgres"):
        if own_stack.available(name):
            out[name] = functools.partial(own_stack.restart, name, 1.0)
    out["why"] = own_stack.why
    if own_stack.reasons:
        print(f"fault suite: stack restarts limited: {out['why']}")
    return out
