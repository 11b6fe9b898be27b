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
    Action,
    ApprovalRule,
    Expectation,
    Frozen,
    Name,
    VerificationCriteria,
)

PacketSha256 = str


class ApprovalRecordedPayload(Frozen):
    packet_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the decision packet approved"
    )
    detail: str = Field(default="", max_length=2000, description="For humans; never parsed")


class ApprovalDeclinedPayload(Frozen):
    packet_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the decision packet declined"
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why (for humans)")


# --- the decision packet (what the approver sees) ------------------------------------------


class RegionEvidence(Frozen):
    region: Name
    error_rate: float | None = None
    queue_depth: float | None = None
    observed_at: AwareDatetime | None = None
    verdict_healthy: bool | None = Field(
        default=None, description="The region's part of the latest verification, if any"
    )


class ControlPlaneEvidence(Frozen):
    subject: str
    observed: str
    matches: bool


class BlastRadiusView(Frozen):
    consequential_steps_taken: int
    max_consequential_steps: int
    restarts_of_target: int | None = None
    max_restarts_per_tier_region: int | None = None
    drained_pools_in_region: tuple[str, ...] | None = None
    max_drained_pools_per_region: int | None = None


class DecisionPacket(Frozen):
    """Everything the approver needs to approve one exact step; its `sha256` is the
    hash of the canonical JSON of every other field."""

    incident_id: str
    correlation_id: str
    action: Action
    summary: str = Field(description="One human line: the action and its exact target")
    issued_by: Name
    issued_at: AwareDatetime
    based_on_state: int = Field(
        ge=0, description="Ledger position of the last state change this packet describes"
    )
    authority: str = Field(description="name@version of the authority in force")
    authority_sha256: str
    rule: ApprovalRule
    expires_at: AwareDatetime
    expectation: Expectation | None = None
    preconditions: tuple[str, ...]
    risk: Literal["high", "medium", "low"]
    risk_notes: tuple[str, ...]
    blast_radius: BlastRadiusView
    evidence: tuple[RegionEvidence, ...]
    control_plane: tuple[ControlPlaneEvidence, ...] = ()
    gathered: Observation | None = Field(
        default=None, description="The latest gathered state in the ledger (StateGathered)"
    )
    verification: VerificationCriteria
    undo: str | None = Field(
        default=None,
        description="The recorded undo of this step, when the executor records one "
        "(None: not recorded yet)",
    )


class ApprovalVote(Frozen):
    approver: Name
    decision: Literal["approved", "declined"]
    at: AwareDatetime
    packet_sha256: str
    counted: bool = Field(description="Counts towards the quorum (entitled, distinct, in time)")
    note: str = ""


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
