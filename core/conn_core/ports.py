"""Ports: what Conn needs from the target systems, as Protocols.

Every port has a simulator adapter (the embedded default) and a real adapter
(Unleash, Kubernetes, Prometheus, webhooks) in `conn_adapters`. Each call is
bounded by the adapter's timeout and returns a typed result that records what
was observed before and after. Mutating calls take an idempotency key (the
directive's correlation ID): repeating a call with the same key changes nothing.

Errors: adapters raise `PortError` (with `retriable`, `rejected`) and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from conn_schemas.observations import (
    ActionResult,
    FlagRuleState,
    MetricsReading,
    RecordNoteResult,
    TierState,
    WorkerPoolState,
)
from conn_schemas.undo import ChangePreview


class PortError(Exception):
    """A target system call failed. Callers ask `retriable`, not the type.

    `rejected`: the target answered and refused the call (e.g. HTTP 4xx), so a
    mutating call certainly changed nothing. Any other failure of a mutating call
    (a timeout, a dropped connection, a 5xx, an unreadable answer) may have landed:
    its outcome is unknown, never "failed"."""

    def __init__(
        self,
        message: str,
        *,
        retriable: bool = False,
        timeout: bool = False,
        rejected: bool = False,
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.timeout = timeout
        self.rejected = rejected


# Observed-state types live in the contract package because they are carried in events.
__all__ = [
    "ActionResult",
    "ChangePreview",
    "FeatureFlags",
    "FlagRuleState",
    "IncidentRecord",
    "Metrics",
    "MetricsReading",
    "Orchestrator",
    "PortError",
    "RecordNoteResult",
    "TierState",
    "WorkerPoolState",
]


# --- ports -----------------------------------------------------------------------


@runtime_checkable
class FeatureFlags(Protocol):
    async def get_rule(self, flag: str, rule: str, region: str) -> FlagRuleState: ...

    async def disable_rule(
        self, flag: str, rule: str, region: str, *, idempotency_key: str
    ) -> ActionResult: ...

    async def enable_rule(
        self, flag: str, rule: str, region: str, *, idempotency_key: str
    ) -> ActionResult: ...

    async def preview_rule(
        self, flag: str, rule: str, region: str, *, enabled: bool
    ) -> ChangePreview:
        """The exact change setting the rule to `enabled` would make; changes nothing."""
        ...


@runtime_checkable
class Orchestrator(Protocol):
    async def get_pool(self, pool: str, region: str) -> WorkerPoolState: ...

    async def drain_pool(self, pool: str, region: str, *, idempotency_key: str) -> ActionResult: ...

    async def scale_pool(
        self, pool: str, region: str, replicas: int, *, idempotency_key: str
    ) -> ActionResult: ...

    async def preview_scale(self, pool: str, region: str, replicas: int) -> ChangePreview:
        """The exact change scaling the pool would make (a server-side dry run where the
        target supports it); changes nothing."""
        ...

    async def preview_restart(self, tier: str, region: str) -> ChangePreview:
        """The exact change a rollout restart would make; changes nothing."""
        ...

    async def get_tier(self, tier: str, region: str) -> TierState: ...

    async def restart_tier(
        self, tier: str, region: str, *, idempotency_key: str
    ) -> ActionResult: ...


@runtime_checkable
class Metrics(Protocol):
    async def read_region(self, region: str) -> MetricsReading: ...


@runtime_checkable
class RegionsMetrics(Protocol):
    """A metrics port that reads several regions in one call (`ScrapeMetrics`: one scrape
    of the page for all of them, instead of one per region). Each region is judged
    exactly as `read_region` would judge it: its reading, or the PortError it would raise."""

    async def read_regions(
        self, regions: Sequence[str]
    ) -> Mapping[str, MetricsReading | PortError]: ...


@runtime_checkable
class IncidentRecord(Protocol):
    async def append_note(
        self, incident_id: str, note: str, *, idempotency_key: str
    ) -> RecordNoteResult: ...
