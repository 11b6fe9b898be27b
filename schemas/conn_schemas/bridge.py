"""The bridge state: one typed view of an incident as the fold sees it.

The same parts as the takeover packet (`conn_schemas.packet`: directive items, health
per region, authority in force, hold, ledger head), under the same names, so the API's
incident view, the packager's read model (`incidents.bridge`) and the post-incident
timeline say the same thing the same way. Built by `conn_core.bridge` (pure).

- `BridgeState`: the whole bridge at one ledger position (ages are relative to the
  last event, so the view is a pure function of the log prefix).
- `BridgeSummary`: the short form (one line of an incident list; the bridge before and
  after each instruction in the timeline).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from conn_schemas.packet import (
    AuthorityInForce,
    ControlPlaneItem,
    DirectiveItem,
    HoldInfo,
    LedgerHead,
    PendingApprovalItem,
    RegionHealth,
)
from conn_schemas.values import (
    MAX_LIST,
    MAX_REGIONS,
    ConnHolder,
    Frozen,
    HoldReason,
    Identifier,
    IncidentId,
    Line,
    Sha256Hex,
    Team,
    Token,
    Verdict,
)

MAX_BRIDGE_DIRECTIVES = 500
"""Directives listed per section of the bridge: the most recent ones."""

BRIDGE_VERSION: Literal[1] = 1

IncidentStatus = Literal["open", "on_hold", "closed"]

Count = Annotated[int, Field(ge=0)]


class PacketReference(Frozen):
    """The latest published takeover packet, as the log records it."""

    sha256: Sha256Hex
    to_team: Team | None = None
    trigger: Literal["hold", "handoff"]
    sequence: int = Field(ge=0, description="Position of the TakeoverPacketPublished record")
    describes_sequence: int = Field(ge=0, description="The ledger position it describes")
    current: bool = Field(
        description="Nothing changed since the position it describes (else one is due)"
    )


class BridgeCounts(Frozen):
    directives: Count
    consequential_steps: Count
    holds: Count
    takeovers_accepted: Count
    ignored_controls: Count
    ignored_authority: Count
    conflicting_records: Count
    refusals: dict[Annotated[str, Field(max_length=64)], Count] = Field(
        default_factory=dict, max_length=MAX_LIST, description="Refusals by RefusalReason"
    )


class BridgeSummary(Frozen):
    """The bridge in one line: who holds the conn, whether it is on hold, the open step."""

    incident_id: IncidentId
    title: Line = ""
    service: Annotated[str, Field(max_length=128)] = ""
    status: IncidentStatus
    sequence: int = Field(ge=0, description="Ledger position this view is at")
    holder: Identifier | None = Field(default=None, description="Who holds the conn")
    on_hold: bool
    hold_reason: HoldReason | None = None
    open_step: Token | None = Field(
        default=None, description="The consequential step not yet verified, if any"
    )
    last_verdict: Verdict | None = None
    pending: Count = Field(description="Directives issued, not yet accepted or refused")
    unverified_changes: tuple[Token, ...] = Field(
        default=(),
        max_length=MAX_BRIDGE_DIRECTIVES,
        description="Correlation ids of consequential steps started but not verified",
    )
    opened_at: AwareDatetime | None = None
    last_event_at: AwareDatetime | None = None


class BridgeState(Frozen):
    """The bridge at one ledger position: the same parts as a takeover packet (without
    the packet's per-section cap of the most recent directives), plus the incident's
    status, the latest packet and counters."""

    bridge_version: Literal[1] = BRIDGE_VERSION
    incident_id: IncidentId
    title: Line = ""
    service: Annotated[str, Field(max_length=128)] = ""
    status: IncidentStatus
    opened: bool
    closed: bool
    on_hold: bool
    sequence: int = Field(ge=0, description="Ledger position this view is at")
    ledger_head: LedgerHead | None = Field(
        default=None, description="The entry at `sequence` (None before the first one)"
    )
    state_changed_at: int = Field(
        ge=0, description="Ledger position of the last verification or state change"
    )
    opened_at: AwareDatetime | None = None
    last_event_at: AwareDatetime | None = Field(
        default=None, description="occurred_at of the last event (region ages are relative to it)"
    )
    holder: ConnHolder | None = Field(default=None, description="Who holds the conn")
    hold: HoldInfo | None = None
    authority: AuthorityInForce | None = None
    open_step: Token | None = Field(
        default=None, description="The consequential step not yet verified, if any"
    )
    last_step: DirectiveItem | None = Field(
        default=None,
        description="The exact last directed step (the last consequential step accepted; "
        "failing that, the last directive issued)",
    )
    last_verdict: Verdict | None = None
    regions: tuple[RegionHealth, ...] = Field(
        default=(), max_length=MAX_REGIONS, description="Health per region"
    )
    control_plane: tuple[ControlPlaneItem, ...] = Field(
        default=(),
        max_length=32,
        description="Expected vs observed control-plane state at the last verification",
    )
    pending_directives: tuple[DirectiveItem, ...] = Field(
        default=(), max_length=MAX_BRIDGE_DIRECTIVES
    )
    blocked_directives: tuple[DirectiveItem, ...] = Field(
        default=(), max_length=MAX_BRIDGE_DIRECTIVES
    )
    partial_changes: tuple[DirectiveItem, ...] = Field(
        default=(),
        max_length=MAX_BRIDGE_DIRECTIVES,
        description="Consequential steps started but not verified (exact targets)",
    )
    pending_approvals: tuple[PendingApprovalItem, ...] = Field(
        default=(), max_length=MAX_BRIDGE_DIRECTIVES
    )
    takeover_requested_to: Team | None = None
    last_packet: PacketReference | None = None
    counts: BridgeCounts
