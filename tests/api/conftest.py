from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from api_support import Api, running_api, settings_for


@pytest_asyncio.fixture(loop_scope="session")
async def api(kafka_bootstrap: str, conn_topics: Any, fresh_database: str) -> AsyncIterator[Api]:
    async with running_api(settings_for(kafka_bootstrap, conn_topics, fresh_database)) as a:
        yield a
