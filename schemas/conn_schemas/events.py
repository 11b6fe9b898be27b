"""The event contract: one envelope, one frozen model per event type.

Every record on `conn.events` (and `conn.control`) is one of these. The wire
name is `event_type` (an explicit string, never the class path) and each type
carries its `schema_version`; older versions are upcast on read
(`conn_schemas.upcasting`). JSON Schema files in `schemas/json/` are generated
from these models (`make schemas`) and a test fails when they drift.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AwareDatetime, Field, model_validator

from conn_schemas.approvals import ApprovalDeclinedPayload, ApprovalRecordedPayload
from conn_schemas.observations import (
    ActionResult,
    MetricsReading,
    Observation,
)
from conn_schemas.undo import RecordedUndo
from conn_schemas.values import (
    GLOBAL_INCIDENT,
    INCIDENT_ID_PATTERN,
    MAX_LABELS,
    MAX_LIST,
    MAX_REGIONS,
    Action,
    Actor,
    AuthorityBoundary,
    Detail,
    Expectation,
    Frozen,
    HoldReason,
    Identifier,
    IncidentId,
    Line,
    MachineText,
    NonEmptyDetail,
    NonEmptyLine,
    RefusalReason,
    Region,
    Team,
    Token,
    Verdict,
    VerificationCriteria,
)

__all__ = ["GLOBAL_INCIDENT", "IncidentId"]

GLOBAL_EVENT_TYPES = frozenset({"KillSwitchEngaged", "KillSwitchReleased"})
"""The only event types whose `incident_id` is the reserved GLOBAL_INCIDENT."""

EnvelopeIncidentId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=f"^(?:{GLOBAL_INCIDENT}|{INCIDENT_ID_PATTERN[1:-1]})$",
        description=f"An incident id; '{GLOBAL_INCIDENT}' only for KillSwitchEngaged/Released",
    ),
]


class Envelope(Frozen):
    """Fields every event carries. Subclasses fix `event_type` and `schema_version`
    and add a typed `payload`."""

    event_id: uuid.UUID
    event_type: str
    schema_version: int
    incident_id: EnvelopeIncidentId
    correlation_id: Token | None = Field(default=None, description="The directive this serves")
    causation_id: Token | None = Field(default=None, description="event_id of the cause")
    actor: Actor
    occurred_at: AwareDatetime
    producer: Token
    payload: Frozen

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    @model_validator(mode="after")
    def _reserved_incident_id(self) -> Envelope:
        """The global-control id is reserved to the kill switch (and only there)."""
        is_global = self.incident_id == GLOBAL_INCIDENT
        if is_global != (self.event_type in GLOBAL_EVENT_TYPES):
            raise ValueError(
                f"incident_id {self.incident_id!r} is not allowed for {self.event_type} "
                f"('{GLOBAL_INCIDENT}' is reserved to kill-switch events, which use only it)"
            )
        return self


# --- payloads -----------------------------------------------------------------------


class AlertReceivedPayload(Frozen):
    source: Literal["alertmanager", "pagerduty", "manual"]
    fingerprint: Token
    service: Identifier
    status: Literal["firing", "resolved"] = "firing"
    severity: Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")] = "unknown"
    summary: Line = ""
    labels: dict[
        Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Line
    ] = Field(default_factory=dict, max_length=MAX_LABELS)
    starts_at: AwareDatetime | None = None
    duplicates_folded: int = Field(default=0, ge=0)


class IncidentOpenedPayload(Frozen):
    title: NonEmptyLine
    service: Identifier
    severity: Literal["sev1", "sev2", "sev3", "sev4", "sev5"] = "sev2"
    opened_from_alert: Token | None = Field(default=None, description="Alert fingerprint, if any")


Sha256 = Annotated[str, Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]

ProposalId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


class AuthorityDeclaredPayload(Frozen):
    authority: AuthorityBoundary
    source_file: Line = Field(description="The runbook file it was read from (its name)")
    content_sha256: Sha256 = Field(description="SHA-256 of the file's exact bytes")
    approval: ProposalId | None = Field(
        default=None,
        description="For a change that widens the boundary during an incident: the "
        "proposal_id of the AuthorityChangeProposed a second person approved "
        "(AuthorityChangeApproved). Without it a widening declaration changes nothing.",
    )


class AuthorityChangeProposedPayload(Frozen):
    """The holder asks for a boundary that is wider than the one in force; it takes
    effect only once a second authorized person who is not the holder approves it."""

    proposal_id: ProposalId
    authority: AuthorityBoundary
    source_file: Line
    content_sha256: Sha256
    base_sha256: Sha256 = Field(description="content_sha256 of the authority in force")
    widenings: tuple[Line, ...] = Field(
        min_length=1,
        max_length=MAX_LIST,
        description="How the proposal widens the boundary in force, for humans",
    )
    detail: Detail = ""


class AuthorityChangeApprovedPayload(Frozen):
    """A second authorized person (never the holder or the proposer) approves one
    exact proposal (by id and content hash)."""

    proposal_id: ProposalId
    content_sha256: Sha256
    detail: Detail = ""


class DirectiveIssuedPayload(Frozen):
    action: Action
    expectation: Expectation | None = None
    based_on_sequence: int = Field(
        ge=0, le=2**62, description="The incident's ledger sequence the commander based this on"
    )
    rationale: Detail = Field(default="", description="For humans; never parsed")


class DirectiveAcceptedPayload(Frozen):
    action: Action
    consequential: bool
    checked_at_sequence: int = Field(ge=0, le=2**62)


class DirectiveRefusedPayload(Frozen):
    action: Action | None = None
    reason: RefusalReason
    detail: MachineText
    refused_by: Literal["directive-api", "executor"]
    checked_at_sequence: int = Field(ge=0, le=2**62)


class StateGatheredPayload(Frozen):
    purpose: Literal["directed", "pre_step", "recovery"]
    observation: Observation
    conflicts: tuple[Detail, ...] = Field(default=(), max_length=16)


class StepStartedPayload(Frozen):
    action: Action
    idempotency_key: Token
    executor_id: Token
    fencing_token: int = Field(ge=0, le=2**62, description="Consumer generation at claim time")
    undo: RecordedUndo | None = Field(
        default=None,
        description="The step's inverse, read from the target before acting "
        "(None: not recorded, e.g. a record written before undo existed)",
    )


class StepSucceededPayload(Frozen):
    action: Action
    result: ActionResult
    summary: MachineText = Field(description="Redacted, for the incident record")
    duration_ms: float = Field(ge=0, allow_inf_nan=False)


class StepFailedPayload(Frozen):
    action: Action
    error: MachineText
    retriable: bool = False
    timed_out: bool = False
    summary: MachineText
    duration_ms: float = Field(ge=0, allow_inf_nan=False)
    not_started: bool = Field(
        default=False,
        description="True: refused at the last gate before the side effect, which never "
        "began (a stop, or a change in the log since the directive); nothing changed",
    )


class StepOutcomeUnknownPayload(Frozen):
    action: Action
    reason: MachineText
    observation: Observation


MAX_CHECKS = 32
"""Control-plane checks in a snapshot (and a packet)."""

MAX_READINGS = 100
"""Readings per region in a snapshot (VerificationCriteria.samples is at most 100)."""


class RegionReadings(Frozen):
    region: Region
    readings: tuple[MetricsReading, ...] = Field(max_length=MAX_READINGS)
    ages_seconds: tuple[Annotated[float, Field(allow_inf_nan=False)], ...] = Field(
        max_length=MAX_READINGS, description="Age of each reading at snapshot time"
    )
    healthy: bool
    fresh: bool


class ControlPlaneCheck(Frozen):
    subject: Line = Field(description="e.g. 'flag checkout-pricing/canary-10pct in eu-west'")
    expected: Line
    observed: Line
    matches: bool


class VerificationSnapshotPayload(Frozen):
    trigger: Literal["step", "directive"]
    step_correlation_id: Token | None = Field(
        default=None, description="The consequential step this verifies, if any"
    )
    regions: tuple[RegionReadings, ...] = Field(max_length=MAX_REGIONS)
    control_plane: tuple[ControlPlaneCheck, ...] = Field(default=(), max_length=MAX_CHECKS)
    criteria: VerificationCriteria
    verdict: Verdict
    detail: MachineText
    window_started_at: AwareDatetime
    window_ended_at: AwareDatetime


class HoldDeclaredPayload(Frozen):
    reason: HoldReason = HoldReason.MANUAL
    detail: MachineText = ""


class ResumeDirectedPayload(Frozen):
    detail: Detail = ""


class TakeoverRequestedPayload(Frozen):
    to_team: Team
    detail: Detail = ""


class TakeoverPacketPublishedPayload(Frozen):
    packet_id: Token
    packet_sha256: Sha256
    to_team: Team | None
    trigger: Literal["hold", "handoff"]
    ledger_sequence: int = Field(ge=0, le=2**62)
    ledger_hash: Token


class TakeoverAcceptedPayload(Frozen):
    team: Team
    packet_sha256: Sha256
    detail: Detail = ""


class IncidentRecordUpdatedPayload(Frozen):
    destination: Token
    summary: MachineText = Field(description="Redacted note as delivered")
    delivered: bool
    idempotency_key: Token


class KillSwitchEngagedPayload(Frozen):
    reason: NonEmptyDetail


class KillSwitchReleasedPayload(Frozen):
    reason: NonEmptyDetail


class IncidentClosedPayload(Frozen):
    resolution: NonEmptyDetail


# --- events -------------------------------------------------------------------------------


class AlertReceived(Envelope):
    event_type: Literal["AlertReceived"] = "AlertReceived"
    schema_version: Literal[1] = 1
    payload: AlertReceivedPayload


class IncidentOpened(Envelope):
    """v2: `severity` is a 'sevN' string (v1 had an integer `sev`)."""

    event_type: Literal["IncidentOpened"] = "IncidentOpened"
    schema_version: Literal[2] = 2
    payload: IncidentOpenedPayload


class AuthorityDeclared(Envelope):
    event_type: Literal["AuthorityDeclared"] = "AuthorityDeclared"
    schema_version: Literal[1] = 1
    payload: AuthorityDeclaredPayload


class AuthorityChangeProposed(Envelope):
    event_type: Literal["AuthorityChangeProposed"] = "AuthorityChangeProposed"
    schema_version: Literal[1] = 1
    payload: AuthorityChangeProposedPayload


class AuthorityChangeApproved(Envelope):
    event_type: Literal["AuthorityChangeApproved"] = "AuthorityChangeApproved"
    schema_version: Literal[1] = 1
    payload: AuthorityChangeApprovedPayload


class DirectiveIssued(Envelope):
    event_type: Literal["DirectiveIssued"] = "DirectiveIssued"
    schema_version: Literal[1] = 1
    payload: DirectiveIssuedPayload


class ApprovalRecorded(Envelope):
    """An entitled approver approves one directive's exact decision packet."""

    event_type: Literal["ApprovalRecorded"] = "ApprovalRecorded"
    schema_version: Literal[1] = 1
    payload: ApprovalRecordedPayload


class ApprovalDeclined(Envelope):
    """An entitled approver declines a directive: it never runs (any decline blocks)."""

    event_type: Literal["ApprovalDeclined"] = "ApprovalDeclined"
    schema_version: Literal[1] = 1
    payload: ApprovalDeclinedPayload


class DirectiveAccepted(Envelope):
    event_type: Literal["DirectiveAccepted"] = "DirectiveAccepted"
    schema_version: Literal[1] = 1
    payload: DirectiveAcceptedPayload


class DirectiveRefused(Envelope):
    event_type: Literal["DirectiveRefused"] = "DirectiveRefused"
    schema_version: Literal[1] = 1
    payload: DirectiveRefusedPayload


class StateGathered(Envelope):
    event_type: Literal["StateGathered"] = "StateGathered"
    schema_version: Literal[1] = 1
    payload: StateGatheredPayload


class StepStarted(Envelope):
    event_type: Literal["StepStarted"] = "StepStarted"
    schema_version: Literal[1] = 1
    payload: StepStartedPayload


class StepSucceeded(Envelope):
    event_type: Literal["StepSucceeded"] = "StepSucceeded"
    schema_version: Literal[1] = 1
    payload: StepSucceededPayload


class StepFailed(Envelope):
    event_type: Literal["StepFailed"] = "StepFailed"
    schema_version: Literal[1] = 1
    payload: StepFailedPayload


class StepOutcomeUnknown(Envelope):
    event_type: Literal["StepOutcomeUnknown"] = "StepOutcomeUnknown"
    schema_version: Literal[1] = 1
    payload: StepOutcomeUnknownPayload


class VerificationSnapshot(Envelope):
    event_type: Literal["VerificationSnapshot"] = "VerificationSnapshot"
    schema_version: Literal[1] = 1
    payload: VerificationSnapshotPayload


class HoldDeclared(Envelope):
    event_type: Literal["HoldDeclared"] = "HoldDeclared"
    schema_version: Literal[1] = 1
    payload: HoldDeclaredPayload


class ResumeDirected(Envelope):
    event_type: Literal["ResumeDirected"] = "ResumeDirected"
    schema_version: Literal[1] = 1
    payload: ResumeDirectedPayload


class TakeoverRequested(Envelope):
    event_type: Literal["TakeoverRequested"] = "TakeoverRequested"
    schema_version: Literal[1] = 1
    payload: TakeoverRequestedPayload


class TakeoverPacketPublished(Envelope):
    event_type: Literal["TakeoverPacketPublished"] = "TakeoverPacketPublished"
    schema_version: Literal[1] = 1
    payload: TakeoverPacketPublishedPayload


class TakeoverAccepted(Envelope):
    event_type: Literal["TakeoverAccepted"] = "TakeoverAccepted"
    schema_version: Literal[1] = 1
    payload: TakeoverAcceptedPayload


class IncidentRecordUpdated(Envelope):
    event_type: Literal["IncidentRecordUpdated"] = "IncidentRecordUpdated"
    schema_version: Literal[1] = 1
    payload: IncidentRecordUpdatedPayload


class KillSwitchEngaged(Envelope):
    event_type: Literal["KillSwitchEngaged"] = "KillSwitchEngaged"
    schema_version: Literal[1] = 1
    payload: KillSwitchEngagedPayload


class KillSwitchReleased(Envelope):
    event_type: Literal["KillSwitchReleased"] = "KillSwitchReleased"
    schema_version: Literal[1] = 1
    payload: KillSwitchReleasedPayload


class IncidentClosed(Envelope):
    event_type: Literal["IncidentClosed"] = "IncidentClosed"
    schema_version: Literal[1] = 1
    payload: IncidentClosedPayload


Event = Annotated[
    AlertReceived
    | IncidentOpened
    | AuthorityDeclared
    | AuthorityChangeProposed
    | AuthorityChangeApproved
    | DirectiveIssued
    | DirectiveAccepted
    | DirectiveRefused
    | StateGathered
    | StepStarted
    | StepSucceeded
    | StepFailed
    | StepOutcomeUnknown
    | VerificationSnapshot
    | HoldDeclared
    | ResumeDirected
    | TakeoverRequested
    | TakeoverPacketPublished
    | TakeoverAccepted
    | IncidentRecordUpdated
    | KillSwitchEngaged
    | KillSwitchReleased
    | IncidentClosed
    | ApprovalRecorded
    | ApprovalDeclined,
    Field(discriminator="event_type"),
]
"""Any Conn event, discriminated by `event_type`."""

EVENT_TYPES: dict[str, type[Envelope]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        AlertReceived,
        IncidentOpened,
        AuthorityDeclared,
        AuthorityChangeProposed,
        AuthorityChangeApproved,
        DirectiveIssued,
        DirectiveAccepted,
        DirectiveRefused,
        StateGathered,
        StepStarted,
        StepSucceeded,
        StepFailed,
        StepOutcomeUnknown,
        VerificationSnapshot,
        HoldDeclared,
        ResumeDirected,
        TakeoverRequested,
        TakeoverPacketPublished,
        TakeoverAccepted,
        IncidentRecordUpdated,
        KillSwitchEngaged,
        KillSwitchReleased,
        IncidentClosed,
        ApprovalRecorded,
        ApprovalDeclined,
    )
}
"""Wire name -> model class."""

CURRENT_VERSIONS: dict[str, int] = {
    name: cls.model_fields["schema_version"].default for name, cls in EVENT_TYPES.items()
}

E = TypeVar("E", bound=Envelope)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event(
    cls: type[E],
    *,
    incident_id: str,
    payload: Frozen,
    actor: Actor,
    producer: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    clock: Callable[[], datetime] = utcnow,
    event_id: uuid.UUID | None = None,
) -> E:
    """Build an event with a fresh id and timestamp (validated like any other)."""
    data: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4(),
        "incident_id": incident_id,
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "actor": actor,
        "occurred_at": clock(),
        "producer": producer,
        "payload": payload,
    }
    return cls.model_validate(data)
