"""Response bodies of the API (what clients receive; the OpenAPI document shows them).

The incident view is the contract's bridge state (`conn_schemas.bridge.BridgeState`,
built by `conn_core.bridge`), the same model the packager keeps in its read model,
plus what only the API knows (the kill switch, health ages relative to now, every
directive). Errors have one shape: `conn_api.errors.ErrorResponse`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conn_schemas.approvals import PendingApproval
from conn_schemas.bridge import BridgeState, BridgeSummary
from conn_schemas.packet import AuthorityInForce
from conn_schemas.undo import RecordedUndo
from conn_schemas.values import Action, Expectation


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- writes ------------------------------------------------------------------------------


class KafkaPosition(Answer):
    topic: str
    partition: int
    offset: int


class Written(Answer):
    """The event a request appended, and whether this service's fold applied it yet
    (read-your-writes): `sequence` and `hash` are its ledger entry once folded."""

    event_id: str
    event_type: str
    position: KafkaPosition
    sequence: int | None = Field(description="Ledger position (null: not folded in time)")
    hash: str | None = Field(description="Ledger entry hash (null: not folded in time)")
    folded: bool


class IncidentOpenedAnswer(Written):
    incident_id: str


class AuthorityDeclaredAnswer(Written):
    incident_id: str
    status: Literal["declared"]
    authority: str = Field(description="name@version")
    content_sha256: str
    source_file: str
    holder: str


class AuthorityProposedAnswer(Written):
    incident_id: str
    status: Literal["proposed"]
    proposal_id: str
    authority: str = Field(description="name@version")
    content_sha256: str
    source_file: str
    widenings: list[str]
    needs: str


class AuthorityApprovedAnswer(Written):
    incident_id: str
    status: Literal["declared"]
    proposal_id: str
    approved_by: str
    authority: str = Field(description="name@version")
    content_sha256: str
    approval_event_id: str


class ControlAnswer(Written):
    incident_id: str
    verb: str
    holder: str | None = None
    on_hold: bool | None = Field(default=None, description="Absent on close")


class KillSwitchAnswer(Written):
    kill_switch: bool
    reason: str


class ApprovalAnswer(Written):
    incident_id: str
    correlation_id: str
    decision: Literal["approved", "declined"]
    by: str
    packet_sha256: str
    approvals: int | None
    required: int | None
    quorum: bool


class ApprovalNeeded(Answer):
    required: int
    roles: list[str]
    teams: list[str]
    expires_at: str


class DirectiveIssuedAnswer(Answer):
    """202: the directive is in the log (DirectiveIssued)."""

    status: Literal["issued"]
    incident_id: str
    correlation_id: str
    consequential: bool
    action: Action
    summary: str
    sequence: int | None = None
    folded: bool
    event_id: str | None = None
    event_type: str | None = None
    position: KafkaPosition | None = None
    hash: str | None = None
    awaiting_approval: ApprovalNeeded | None = Field(
        default=None, description="Present when the action needs approvers first"
    )
    recovered: str | None = Field(
        default=None, description="Present when an earlier unacknowledged append had landed"
    )
    replayed: bool | None = Field(
        default=None, description="Present (true) when answered from the Idempotency-Key"
    )
    undoes: str | None = Field(default=None, description="Undo: the step it reverses")


class DryRunAnswer(Answer):
    """200: what the directive would do; nothing is appended."""

    dry_run: Literal[True]
    incident_id: str
    decision: Literal["would_be_issued"]
    checked_at_sequence: int
    action: Action
    summary: str
    consequential: bool
    recorded: Literal[False]
    preview: dict[str, Any] | None = Field(description="The target's ChangePreview")
    detail: str | None = Field(default=None, description="Why there is no preview")
    undoes: str | None = Field(default=None, description="Undo: the step it would reverse")


class AlertIntakeAnswer(Answer):
    received: int
    appended: int
    folded: int
    ignored: int
    recorded_after_close: int
    incidents: list[str]
    duplicate_delivery: bool | None = Field(
        default=None, description="Present (true) for a replayed PagerDuty delivery"
    )


# --- reads -------------------------------------------------------------------------------


class DirectiveView(Answer):
    correlation_id: str
    action: Action
    summary: str
    actor: str
    issued_sequence: int
    based_on_sequence: int
    consequential: bool
    expectation: Expectation | None
    status: str
    refusal: str | None
    refusal_detail: str
    verdict: str | None
    started_at: str | None
    finished_at: str | None
    not_started: bool
    undo: RecordedUndo | None


class DirectiveList(Answer):
    items: list[DirectiveView]


class AuthorityProposalView(Answer):
    proposal_id: str
    name: str
    version: str
    sha256: str
    source_file: str
    proposed_by: str
    proposed_sequence: int
    widenings: list[str]
    approved_by: str | None
    applied: bool
    current: bool = Field(description="Proposed against the authority in force now")


class AuthorityView(AuthorityInForce):
    """The authority in force (the bridge's `AuthorityInForce`) with its source file,
    regions and the changes proposed to it."""

    source_file: str
    regions: list[str]
    proposals: list[AuthorityProposalView]
    ignored_records: int


class AuthorityAnswer(Answer):
    incident_id: str
    authority: AuthorityView | None


class KillSwitchView(Answer):
    engaged: bool
    reason: str


class HealthReading(Answer):
    error_rate: float | None
    queue_depth: float | None
    request_rate: float | None
    observed_at: str | None
    age_seconds: float = Field(description="Relative to the time of the request")


class IncidentView(BridgeState):
    """GET /v1/incidents/{id}: the bridge state (conn_schemas.bridge.BridgeState) plus
    what only the API knows. `health` (ages relative to now), `unverified_changes`,
    `refusals` and `consequential_steps` are the API's older names, kept for clients."""

    authority: AuthorityView | None = None
    kill_switch: KillSwitchView
    health: dict[str, HealthReading] = Field(
        description="Regions with a reading; ages relative to the time of the request"
    )
    consequential_steps: int
    drained_pools: dict[str, list[str]]
    unverified_changes: list[DirectiveView] = Field(
        description="The directives of `partial_changes`, in the directive view"
    )
    refusals: dict[str, int]
    directives: list[DirectiveView]


class IncidentList(Answer):
    items: list[BridgeSummary]


class ControlView(Answer):
    kill_switch: bool
    reason: str
    changed_at: str | None
    changed_by: str | None


class LedgerItem(Answer):
    model_config = ConfigDict(extra="forbid")

    sequence: int
    hash: str
    position: KafkaPosition
    event: dict[str, Any] = Field(description="The event (an Event of schemas/json)")
    redacted: bool | None = Field(
        default=None,
        description="Present (true) when tool output was withheld and texts scrubbed: the "
        "event then no longer hashes to `hash`",
    )


class LedgerHeadView(Answer):
    sequence: int
    hash: str


class LedgerPage(Answer):
    incident_id: str
    items: list[LedgerItem]
    view: Literal["full", "redacted"]
    next_after: int | None
    head: LedgerHeadView | None
    source: Literal["read_model", "fold"]


class PacketAnswer(Answer):
    incident_id: str
    packet_id: str
    packet_sha256: str
    to_team: str | None
    trigger: str
    ledger_sequence: int
    ledger_hash: str
    published_at_sequence: int
    current: bool
    takeover_pending: bool
    published_event: dict[str, Any] = Field(description="The TakeoverPacketPublished event")
    packet: dict[str, Any] | None = Field(
        description="The TakeoverPacket (schemas/json/TakeoverPacket.schema.json), when the "
        "packager's read model has it"
    )
    markdown: str | None
    source: Literal["packager", "ledger"]
    generated_at: str | None = None


class Precondition(Answer):
    condition: str
    status: str = Field(description="met / not_met / unknown, or who checks it")


class DecisionPacketView(Answer):
    incident_id: str
    directive: DirectiveView
    evidence: dict[str, Any] = Field(
        description="last_gathered, last_verification and health per region"
    )
    preconditions: list[Precondition]
    risk: dict[str, Any] = Field(
        description="consequential, read_only, target, regions; with an authority: "
        "blast radius and reservations"
    )
    rollback_hint: str
    verification_criteria: dict[str, Any] | None
    kill_switch: bool
    ledger_sequence: int
    status: str
    final: bool


class ApprovalList(Answer):
    incident_id: str
    ledger_sequence: int
    items: list[PendingApproval]


class Me(Answer):
    id: str
    roles: list[str]
    team: str | None
    kind: str
    via: str


# --- fleet -------------------------------------------------------------------------------


class FleetFigures(Answer):
    """Definitions: README, "Fleet SLIs" (conn_core.fleet.figures)."""

    incidents: int
    closed: int
    safe_completions: int
    safe_completion_rate: float | None
    requests: int
    caught: int
    caught_rate: float | None
    caught_by_reason: dict[str, int]
    consequential_steps: int
    traces: int
    traces_complete: int
    trace_completeness: float | None
    false_actions: int
    incidents_with_false_action: int
    false_action_rate: float | None
    packets_accepted: int
    packets_judged: int
    packets_reliable: int
    packet_reliability: float | None
    escalated: int
    escalation_rate: float | None
    unauthorized_side_effects: int
    duplicate_side_effects: int
    ignored_records: int
    time_to_first_action_seconds: dict[str, Any] = Field(description="count, p50, p90, max")
    time_to_verified_recovery_seconds: dict[str, Any] = Field(description="count, p50, p90, max")


class FleetWeek(FleetFigures):
    week: str = Field(description="ISO week (YYYY-Www), or 'unknown'")


class FleetWindow(Answer):
    since: str | None
    until: str | None


class FleetReport(Answer):
    definitions_version: int | str
    window: FleetWindow
    totals: FleetFigures
    weeks: list[FleetWeek]


# --- ops ---------------------------------------------------------------------------------


class Ready(Answer):
    status: Literal["ready"]
    checks: dict[str, bool]


class Live(Answer):
    status: Literal["ok"]
