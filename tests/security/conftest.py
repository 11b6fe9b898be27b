from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from api.api_support import Api, running_api, settings_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(pytest.mark.security)
            item.add_marker(pytest.mark.integration)


@pytest_asyncio.fixture(loop_scope="session")
async def api(kafka_bootstrap: str, conn_topics: Any, fresh_database: str) -> AsyncIterator[Api]:
    """The real directive API (in process) over the session's real Kafka and PostgreSQL."""
    async with running_api(settings_for(kafka_bootstrap, conn_topics, fresh_database)) as a:
        yield a
