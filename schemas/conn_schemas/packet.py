"""The takeover packet: what a receiving team needs to take the conn (invariant 9).

Published to `conn.takeover` (compacted, key = incident_id) and recorded in the
log as `TakeoverPacketPublished` with the SHA-256 of the packet's JSON
(`conn_core.chain.sha256_json(packet.model_dump(mode="json"))`) and the ledger
head. A packet is a pure function of the incident's log prefix up to its
ledger head, so `conn replay` can rebuild it and prove the hash.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from conn_schemas.values import (
    MAX_LIST,
    MAX_REGIONS,
    Action,
    Detail,
    Frozen,
    HoldReason,
    Identifier,
    IncidentId,
    Line,
    RefusalReason,
    Region,
    Sha256Hex,
    Target,
    Team,
    Token,
    Verdict,
)

MAX_PACKET_DIRECTIVES = 8
"""Directives listed per section of a packet: the most recent ones (the API lists all)."""

PACKET_VERSION: Literal[1] = 1


class LedgerHead(Frozen):
    """The incident's ledger position the packet describes."""

    sequence: int = Field(ge=0)
    hash: Token


class AuthorityInForce(Frozen):
    name: Identifier
    version: Identifier
    sha256: Token | None = Field(description="SHA-256 of the declared authority file")
    holder: Identifier = Field(description="Who holds the conn")
    holder_team: Team | None = None
    takeover_teams: tuple[Team, ...] = Field(default=(), max_length=MAX_LIST)


class HoldInfo(Frozen):
    reason: HoldReason
    detail: Detail
    since_sequence: int
    correlation_id: Token | None = None


class DirectiveItem(Frozen):
    """One directive with its exact action and target, and where it stands."""

    correlation_id: Token
    action: Action
    description: Detail = Field(
        description="e.g. 'drain_worker_pool cache-invalidation in us-east'"
    )
    target: Target | None = None
    regions: tuple[Region, ...] = Field(default=(), max_length=MAX_REGIONS)
    consequential: bool
    issued_by: Identifier
    issued_sequence: int
    status: Annotated[str, Field(max_length=32, pattern=r"^[a-z_]+$")] = Field(
        description="issued/accepted/refused/started/succeeded/failed/..."
    )
    verdict: Verdict | None = None
    refusal: RefusalReason | None = None
    refusal_detail: Detail = ""
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None


class RegionHealth(Frozen):
    """The latest health reading of one region, and how old it was at packet time."""

    region: Region
    error_rate: float | None = None
    queue_depth: float | None = None
    request_rate: float | None = None
    observed_at: AwareDatetime | None = None
    age_seconds: float | None = Field(default=None, description="None = never observed")
    healthy: bool | None = Field(
        default=None, description="From the last verification snapshot of the region, if any"
    )
    fresh: bool | None = None
    verified_at: AwareDatetime | None = None


class ControlPlaneItem(Frozen):
    subject: Line
    expected: Line
    observed: Line
    matches: bool


class PendingApprovalItem(Frozen):
    """A directive waiting for approvers: who approved so far, what is still needed."""

    correlation_id: Token
    description: Line
    issued_by: Identifier
    required: int = Field(ge=1, le=10)
    approved_by: tuple[Identifier, ...] = Field(default=(), max_length=10)
    decision_packet_sha256: Sha256Hex
    expires_at: AwareDatetime


class TakeoverPacket(Frozen):
    """Exactly what invariant 9 lists, plus who/why. Accept it with TakeoverAccepted
    carrying `packet_sha256` (checked by `conn_core.rules.check_control`)."""

    packet_version: Literal[1] = PACKET_VERSION
    packet_id: Token
    incident_id: IncidentId
    title: Line
    service: Identifier
    trigger: Literal["hold", "handoff"]
    to_team: Team | None = None
    generated_at: AwareDatetime = Field(
        description="occurred_at of the event at the ledger head (ages are relative to it)"
    )
    hold: HoldInfo | None = None
    last_step: DirectiveItem | None = Field(description="The exact last directed step")
    last_verdict: Verdict | None = None
    regions: tuple[RegionHealth, ...] = Field(
        max_length=MAX_REGIONS, description="Current health per region"
    )
    control_plane: tuple[ControlPlaneItem, ...] = Field(
        default=(),
        max_length=32,
        description="Expected vs observed control-plane state at the last verification",
    )
    pending_directives: tuple[DirectiveItem, ...] = Field(
        default=(), max_length=MAX_PACKET_DIRECTIVES
    )
    blocked_directives: tuple[DirectiveItem, ...] = Field(
        default=(), max_length=MAX_PACKET_DIRECTIVES
    )
    partial_changes: tuple[DirectiveItem, ...] = Field(
        default=(),
        max_length=MAX_PACKET_DIRECTIVES,
        description="Consequential steps started but not verified (exact targets)",
    )
    authority: AuthorityInForce | None = None
    pending_approvals: tuple[PendingApprovalItem, ...] = Field(
        default=(),
        max_length=MAX_PACKET_DIRECTIVES,
        description="Directives waiting for a second person (two-person rule), with the "
        "hash of the decision packet to approve",
    )
    ledger_head: LedgerHead
