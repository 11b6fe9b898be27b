"""What Conn observed in a target system. Returned by the ports and carried in
events (StateGathered, StepOutcomeUnknown, VerificationSnapshot)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, Field

from conn_schemas.values import (
    MAX_EXTRA_SIGNALS,
    MAX_LIST,
    Frozen,
    JsonObject,
    Label,
    Line,
    Region,
    SignalName,
    Token,
)


class FlagRuleState(Frozen):
    flag: Label
    rule: Label
    region: Region
    enabled: bool
    observed_at: AwareDatetime


class WorkerPoolState(Frozen):
    pool: Label
    region: Region
    desired_replicas: int = Field(ge=-(2**31), le=2**31)
    ready_replicas: int = Field(ge=-(2**31), le=2**31)
    observed_at: AwareDatetime

    @property
    def drained(self) -> bool:
        return self.desired_replicas == 0 and self.ready_replicas == 0


class TierState(Frozen):
    tier: Label
    region: Region
    healthy: bool
    generation: int = Field(
        ge=-(2**62), le=2**62, description="Increments on every completed rollout restart"
    )
    restarting: bool = False
    observed_at: AwareDatetime


FiniteValue = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
"""A finite, non-negative measurement (JSON has no NaN or infinity)."""

NO_DATA = "None = no data at the source (series missing, NaN or infinite): never health"


class MetricsReading(Frozen):
    """One sample of a region's health. `observed_at` is when the source last
    computed the values (not when we asked): a frozen source shows its age.

    A value the source could not give (no series, NaN such as 0/0 with no traffic,
    an infinity) is recorded as None, never as 0: no data is not health."""

    region: Region
    error_rate: FiniteValue | None = Field(description=f"errors / requests, 0..1; {NO_DATA}")
    queue_depth: FiniteValue | None = Field(description=NO_DATA)
    request_rate: FiniteValue | None = Field(description=f"requests per second; {NO_DATA}")
    observed_at: AwareDatetime
    extra: dict[SignalName, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=MAX_EXTRA_SIGNALS
    )

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.observed_at).total_seconds())


class ActionResult(Frozen):
    """Outcome of one mutating call."""

    idempotency_key: Token
    changed: bool = Field(description="False when the key had been seen already, or no-op")
    before: JsonObject
    after: JsonObject
    output: JsonObject = Field(default_factory=dict, description="Raw tool output (audit)")


class RecordNoteResult(Frozen):
    idempotency_key: Token
    delivered: bool
    duplicate: bool = False
    output: dict[str, Any] = Field(default_factory=dict)


class Observation(Frozen):
    """A gathered picture of the platform at one moment (any part may be empty)."""

    flags: tuple[FlagRuleState, ...] = Field(default=(), max_length=MAX_LIST)
    pools: tuple[WorkerPoolState, ...] = Field(default=(), max_length=MAX_LIST)
    tiers: tuple[TierState, ...] = Field(default=(), max_length=MAX_LIST)
    metrics: tuple[MetricsReading, ...] = Field(default=(), max_length=MAX_LIST)
    errors: tuple[Line, ...] = Field(
        default=(), max_length=MAX_LIST, description="Reads that failed, and why"
    )
