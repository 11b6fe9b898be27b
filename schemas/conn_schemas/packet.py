"""The takeover packet: what a receiving team needs to take the conn (invariant 9).

Published to `conn.takeover` (compacted, key = incident_id) and recorded in the
log as `TakeoverPacketPublished` with the SHA-256 of the packet's JSON
(`conn_core.chain.sha256_json(packet.model_dump(mode="json"))`) and the ledger
head. A packet is a pure function of the incident's log prefix up to its
ledger head, so `conn replay` can rebuild it and prove the hash.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from conn_schemas.values import (
    Action,
    Frozen,
    HoldReason,
    Name,
    RefusalReason,
    Verdict,
)

PACKET_VERSION: Literal[1] = 1


class LedgerHead(Frozen):
    """The incident's ledger position the packet describes."""

    sequence: int = Field(ge=0)
    hash: str


class AuthorityInForce(Frozen):
    name: str
    version: str
    sha256: str | None = Field(description="SHA-256 of the declared authority file")
    holder: str = Field(description="Who holds the conn")
    holder_team: str | None = None
    takeover_teams: tuple[str, ...] = ()


class HoldInfo(Frozen):
    reason: HoldReason
    detail: str
    since_sequence: int
    correlation_id: str | None = None


class DirectiveItem(Frozen):
    """One directive with its exact action and target, and where it stands."""

    correlation_id: str
    action: Action
    description: str = Field(description="e.g. 'drain_worker_pool cache-invalidation in us-east'")
    target: str | None = None
    regions: tuple[str, ...] = ()
    consequential: bool
    issued_by: str
    issued_sequence: int
    status: str = Field(description="issued/accepted/refused/started/succeeded/failed/...")
    verdict: Verdict | None = None
    refusal: RefusalReason | None = None
    refusal_detail: str = ""
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None


class RegionHealth(Frozen):
    """The latest health reading of one region, and how old it was at packet time."""

    region: str
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
    subject: str
    expected: str
    observed: str
    matches: bool


class PendingApprovalItem(Frozen):
    """A directive waiting for approvers: who approved so far, what is still needed."""

    correlation_id: str
    description: str
    issued_by: str
    required: int
    approved_by: tuple[str, ...] = ()
    decision_packet_sha256: str
    expires_at: AwareDatetime


class TakeoverPacket(Frozen):
    """Exactly what invariant 9 lists, plus who/why. Accept it with TakeoverAccepted
    carrying `packet_sha256` (checked by `conn_core.rules.check_control`)."""

    packet_version: Literal[1] = PACKET_VERSION
    packet_id: str
    incident_id: str
    title: str
    service: str
    trigger: Literal["hold", "handoff"]
    to_team: Name | None = None
    generated_at: AwareDatetime = Field(
        description="occurred_at of the event at the ledger head (ages are relative to it)"
    )
    hold: HoldInfo | None = None
    last_step: DirectiveItem | None = Field(description="The exact last directed step")
    last_verdict: Verdict | None = None
    regions: tuple[RegionHealth, ...] = Field(description="Current health per region")
    control_plane: tuple[ControlPlaneItem, ...] = Field(
        default=(), description="Expected vs observed control-plane state at the last verification"
    )
    pending_directives: tuple[DirectiveItem, ...] = ()
    blocked_directives: tuple[DirectiveItem, ...] = ()
    partial_changes: tuple[DirectiveItem, ...] = Field(
        default=(), description="Consequential steps started but not verified (exact targets)"
    )
    authority: AuthorityInForce | None = None
    pending_approvals: tuple[PendingApprovalItem, ...] = Field(
        default=(),
        description="Directives waiting for a second person (two-person rule), with the "
        "hash of the decision packet to approve",
    )
    ledger_head: LedgerHead
