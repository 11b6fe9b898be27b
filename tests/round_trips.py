"""Counting a service's round trips (tests/*/test_*_round_trips.py): one timeline of what
a step sends — PostgreSQL statements, acknowledged appends, log looks, HTTP calls — in
the order sent. Counts, never times."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest


@dataclass
class Timeline:
    entries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, what: str) -> None:
        self.entries.append((kind, what))

    def of(self, kind: str) -> list[str]:
        return [what for k, what in self.entries if k == kind]

    def count(self, kind: str) -> int:
        return len(self.of(kind))


def is_reset(statement: str) -> bool:
    """asyncpg's reset query, sent when a connection goes back to its pool."""
    return "pg_advisory_unlock_all" in statement or "RESET ALL" in statement


def logging_pools(monkeypatch: pytest.MonkeyPatch, timeline: Timeline) -> None:
    """Every connection of every pool made from now on logs each statement it sends
    (reset queries included) to `timeline` as ("pg", statement)."""
    real = asyncpg.create_pool

    def create_pool(*args: Any, **kwargs: Any) -> Any:
        init: Callable[[asyncpg.Connection], Any] | None = kwargs.pop("init", None)

        async def logging_init(conn: asyncpg.Connection) -> None:
            conn.add_query_logger(lambda q: timeline.add("pg", " ".join(q.query.split())))
            if init is not None:
                await init(conn)

        return real(*args, init=logging_init, **kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", create_pool)


def count(entries: list[tuple[str, str]], kind: str) -> int:
    """How many of `entries` (a slice of a timeline) are of `kind`."""
    return sum(1 for k, _ in entries if k == kind)
