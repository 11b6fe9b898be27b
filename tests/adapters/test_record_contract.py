"""One IncidentRecord contract: the simulator's webhook and the generic webhook adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from adapter_support import Sim

from conn_adapters.record import (
    NullIncidentRecord,
    SimulatorIncidentRecord,
    WebhookIncidentRecord,
)
from conn_core.ports import IncidentRecord


class RecordContract:
    async def test_implements_the_port(self, record: Any) -> None:
        assert isinstance(record, IncidentRecord)

    async def test_append_and_repeat(self, record: IncidentRecord, sim: Sim) -> None:
        first = await record.append_note("inc-1", "step 1 verified", idempotency_key="n-1")
        second = await record.append_note("inc-1", "step 1 verified", idempotency_key="n-1")
        assert first.delivered and not first.duplicate
        assert second.duplicate
        notes = sim.http.get("/sim/incident-record").json()
        assert [n["text"] for n in notes] == ["[inc-1] step 1 verified"]
        assert sim.side_effects() == {"n-1": 1}

    async def test_duplicate_detected_by_receiver_across_adapters(
        self, record: IncidentRecord, sim: Sim
    ) -> None:
        await record.append_note("inc-1", "x", idempotency_key="n-2")
        other = SimulatorIncidentRecord(sim.url)
        assert (await other.append_note("inc-1", "x", idempotency_key="n-2")).duplicate
        await other.aclose()


class TestSimulatorRecord(RecordContract):
    @pytest.fixture
    async def record(self, sim: Sim) -> AsyncIterator[SimulatorIncidentRecord]:
        adapter = SimulatorIncidentRecord(sim.url, timeout=5)
        yield adapter
        await adapter.aclose()


class TestWebhookRecord(RecordContract):
    @pytest.fixture
    async def record(self, sim: Sim) -> AsyncIterator[WebhookIncidentRecord]:
        adapter = WebhookIncidentRecord(sim.url + "/sim/incident-record", retries=1, timeout=5)
        yield adapter
        await adapter.aclose()


async def test_null_record_is_a_port() -> None:
    assert isinstance(NullIncidentRecord(), IncidentRecord)
