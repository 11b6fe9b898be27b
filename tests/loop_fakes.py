"""The record shapes the consumer loop's unit tests feed it (tests/unit/test_pipeline.py,
test_handler_failures.py): a record whose value is already its event, and what a fake
`Trust.open` returns for it."""

from __future__ import annotations

from dataclasses import dataclass

from conn_schemas.signing import SignerRole


@dataclass(frozen=True)
class FakeEvent:
    incident_id: str
    event_type: str = "IncidentOpened"


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: FakeEvent
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class FakeTrusted:
    event: FakeEvent
    principal: str = "test"
    role: SignerRole = SignerRole.EXECUTOR
