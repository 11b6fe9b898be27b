"""The two-person rule on the wire (issue 19, DESIGN.md invariant 11).

`ApprovalRecorded` / `ApprovalDeclined` are appended by the directive-api on
behalf of the token-authenticated approver (only the `api` signer role may write
them), with `correlation_id` = the directive they are about. An approval names
the SHA-256 of the decision packet the approver read (`DecisionPacket`, computed
purely from the ledger by `conn_core.approvals`), so an approver approves exactly
what will run: an approval naming any other hash changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field

from conn_schemas.observations import Observation
from conn_schemas.values import (
    MAX_LIST,
    MAX_REGIONS,
    Action,
    ApprovalRule,
    Detail,
    Expectation,
    Frozen,
    Identifier,
    IncidentId,
    Line,
    Name,
    NonEmptyDetail,
    Region,
    Sha256Hex,
    Target,
    Token,
    VerificationCriteria,
)

PacketSha256 = Sha256Hex


class ApprovalRecordedPayload(Frozen):
    packet_sha256: Sha256Hex = Field(description="SHA-256 of the decision packet approved")
    detail: Detail = Field(default="", description="For humans; never parsed")


class ApprovalDeclinedPayload(Frozen):
    packet_sha256: Sha256Hex = Field(description="SHA-256 of the decision packet declined")
    reason: NonEmptyDetail = Field(description="Why (for humans)")


# --- the decision packet (what the approver sees) ------------------------------------------


class RegionEvidence(Frozen):
    region: Region
    error_rate: float | None = None
    queue_depth: float | None = None
    observed_at: AwareDatetime | None = None
    verdict_healthy: bool | None = Field(
        default=None, description="The region's part of the latest verification, if any"
    )


class ControlPlaneEvidence(Frozen):
    subject: Line
    observed: Line
    matches: bool


class BlastRadiusView(Frozen):
    consequential_steps_taken: int
    max_consequential_steps: int
    restarts_of_target: int | None = None
    max_restarts_per_tier_region: int | None = None
    drained_pools_in_region: tuple[Target, ...] | None = Field(default=None, max_length=MAX_LIST)
    max_drained_pools_per_region: int | None = None


class DecisionPacket(Frozen):
    """Everything the approver needs to approve one exact step; its `sha256` is the
    hash of the canonical JSON of every other field."""

    incident_id: IncidentId
    correlation_id: Token
    action: Action
    summary: Line = Field(description="One human line: the action and its exact target")
    issued_by: Name
    issued_at: AwareDatetime
    based_on_state: int = Field(
        ge=0, description="Ledger position of the last state change this packet describes"
    )
    authority: Line = Field(description="name@version of the authority in force")
    authority_sha256: Line
    rule: ApprovalRule
    expires_at: AwareDatetime
    expectation: Expectation | None = None
    preconditions: tuple[Line, ...] = Field(max_length=MAX_LIST)
    risk: Literal["high", "medium", "low"]
    risk_notes: tuple[Line, ...] = Field(max_length=MAX_LIST)
    blast_radius: BlastRadiusView
    evidence: tuple[RegionEvidence, ...] = Field(max_length=MAX_REGIONS)
    control_plane: tuple[ControlPlaneEvidence, ...] = Field(
        default=(), max_length=32
    )  # = MAX_CHECKS
    gathered: Observation | None = Field(
        default=None, description="The latest gathered state in the ledger (StateGathered)"
    )
    verification: VerificationCriteria
    undo: Line | None = Field(
        default=None,
        description="The recorded undo of this step, when the executor records one "
        "(None: not recorded yet)",
    )


class ApprovalVote(Frozen):
    approver: Identifier
    decision: Literal["approved", "declined"]
    at: AwareDatetime
    packet_sha256: Sha256Hex
    counted: bool = Field(description="Counts towards the quorum (entitled, distinct, in time)")
    note: Detail = ""


class PendingApproval(Frozen):
    """One directive waiting for (or decided by) approvers, as the API shows it."""

    correlation_id: str
    status: Literal["awaiting", "approved", "declined", "expired", "cancelled", "executed"]
    required: int
    counted: int
    votes: tuple[ApprovalVote, ...]
    packet: DecisionPacket
    packet_sha256: str
    waiting_since: datetime
