from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from executor_harness import Harness
from fixtures_services import Proc


@pytest_asyncio.fixture(loop_scope="session")
async def make_harness(
    kafka_bootstrap: str,
    conn_topics: Any,
    fresh_database: str,
    simulator: Callable[..., Proc],
    start_process: Callable[..., Proc],
    trust: Any,
) -> AsyncIterator[Callable[..., Any]]:
    """`await make_harness(scenario="seed_outage")` -> started Harness (one per test)."""
    made: list[Harness] = []

    async def make(scenario: str = "seed_outage") -> Harness:
        h = Harness(
            kafka_bootstrap=kafka_bootstrap,
            topics=conn_topics,
            database_url=fresh_database,
            simulator=simulator(scenario=scenario),
            start_process=start_process,
            trust=trust,
        )
        await h.start()
        made.append(h)
        return h

    yield make
    for h in made:
        await h.stop()
