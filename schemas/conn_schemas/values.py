"""Value types carried inside event payloads: actors, bounded actions, expectations,
the authority boundary, verdicts and refusal reasons.

Everything here is a frozen pydantic model. Free text is only ever carried as a
human note (`rationale`, `note`); no code turns it into an action.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base of every contract model: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Name = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
]
"""A target or region name: no spaces, no free text."""


# --- who ---------------------------------------------------------------------------


class Role(StrEnum):
    COMMANDER = "commander"
    SPECIALIST = "specialist"
    OBSERVER = "observer"
    INTEGRATION = "integration"
    ADMIN = "admin"


class Actor(Frozen):
    """Who appended an event: an authenticated human, or a service."""

    kind: Literal["human", "service"]
    id: Name
    roles: tuple[Role, ...] = ()
    team: Name | None = None

    @classmethod
    def service(cls, name: str) -> Actor:
        return cls(kind="service", id=name)


# --- bounded actions -------------------------------------------------------------------


class ActionType(StrEnum):
    GATHER_STATE = "gather_state"
    DISABLE_FLAG_RULE = "disable_flag_rule"
    DRAIN_WORKER_POOL = "drain_worker_pool"
    RESTART_DEPENDENCY_TIER = "restart_dependency_tier"
    VERIFY = "verify"
    UPDATE_INCIDENT_RECORD = "update_incident_record"


CONSEQUENTIAL_ACTIONS = frozenset(
    {
        ActionType.DISABLE_FLAG_RULE,
        ActionType.DRAIN_WORKER_POOL,
        ActionType.RESTART_DEPENDENCY_TIER,
    }
)
"""Actions that change a target system (and so must be verified before the next)."""

READ_ONLY_ACTIONS = frozenset({ActionType.GATHER_STATE, ActionType.VERIFY})


class GatherState(Frozen):
    action: Literal[ActionType.GATHER_STATE] = ActionType.GATHER_STATE
    regions: tuple[Name, ...] = ()


class DisableFlagRule(Frozen):
    action: Literal[ActionType.DISABLE_FLAG_RULE] = ActionType.DISABLE_FLAG_RULE
    flag: Name
    rule: Name
    region: Name


class DrainWorkerPool(Frozen):
    action: Literal[ActionType.DRAIN_WORKER_POOL] = ActionType.DRAIN_WORKER_POOL
    pool: Name
    region: Name


class RestartDependencyTier(Frozen):
    action: Literal[ActionType.RESTART_DEPENDENCY_TIER] = ActionType.RESTART_DEPENDENCY_TIER
    tier: Name
    region: Name


class Verify(Frozen):
    action: Literal[ActionType.VERIFY] = ActionType.VERIFY
    regions: tuple[Name, ...] = ()


class UpdateIncidentRecord(Frozen):
    action: Literal[ActionType.UPDATE_INCIDENT_RECORD] = ActionType.UPDATE_INCIDENT_RECORD
    note: str = Field(min_length=1, max_length=4000)


Action = Annotated[
    GatherState
    | DisableFlagRule
    | DrainWorkerPool
    | RestartDependencyTier
    | Verify
    | UpdateIncidentRecord,
    Field(discriminator="action"),
]


def action_target(action: Action) -> str | None:
    """The exact target an action touches (flag/rule, pool or tier), if any."""
    if isinstance(action, DisableFlagRule):
        return f"{action.flag}/{action.rule}"
    if isinstance(action, DrainWorkerPool):
        return action.pool
    if isinstance(action, RestartDependencyTier):
        return action.tier
    return None


def action_regions(action: Action) -> tuple[str, ...]:
    """Regions an action touches ((), for "all regions of the incident")."""
    if isinstance(action, DisableFlagRule | DrainWorkerPool | RestartDependencyTier):
        return (action.region,)
    if isinstance(action, GatherState | Verify):
        return action.regions
    return ()


def describe_action(action: Action) -> str:
    """One human line, e.g. 'drain_worker_pool cache-invalidation in us-east'."""
    target = action_target(action)
    regions = action_regions(action)
    parts = [action.action.value]
    if target:
        parts.append(target)
    if regions:
        parts.append("in " + ", ".join(regions))
    return " ".join(parts)


# --- what the commander expects to observe first -------------------------------------


class FlagRuleExpectation(Frozen):
    kind: Literal["flag_rule"] = "flag_rule"
    flag: Name
    rule: Name
    region: Name
    enabled: bool


class WorkerPoolExpectation(Frozen):
    kind: Literal["worker_pool"] = "worker_pool"
    pool: Name
    region: Name
    drained: bool


class TierExpectation(Frozen):
    kind: Literal["tier"] = "tier"
    tier: Name
    region: Name
    healthy: bool


Expectation = Annotated[
    FlagRuleExpectation | WorkerPoolExpectation | TierExpectation,
    Field(discriminator="kind"),
]


def describe_expectation(exp: FlagRuleExpectation | WorkerPoolExpectation | TierExpectation) -> str:
    if isinstance(exp, FlagRuleExpectation):
        state = "enabled" if exp.enabled else "disabled"
        return f"rule {exp.rule} of {exp.flag} is {state} in {exp.region}"
    if isinstance(exp, WorkerPoolExpectation):
        state = "drained" if exp.drained else "serving"
        return f"pool {exp.pool} is {state} in {exp.region}"
    state = "healthy" if exp.healthy else "unhealthy"
    return f"tier {exp.tier} is {state} in {exp.region}"


# --- authority boundary (declared from a versioned runbook/authority file) -----------


class ActionGrant(Frozen):
    """One kind of action the holder of the conn may direct, and where."""

    action: ActionType
    targets: tuple[Name, ...] = Field(
        default=(), description="Allowed exact targets ('flag/rule', pool or tier); () = any"
    )
    regions: tuple[Name, ...] = Field(default=(), description="Allowed regions; () = any")


class Reservation(Frozen):
    """An action on a target that only a named team may direct."""

    action: ActionType
    target: Name
    team: Name
    reason: str = ""


class BlastRadius(Frozen):
    max_drained_pools_per_region: int = Field(default=1, ge=0)
    max_restarts_per_tier_region: int = Field(default=1, ge=0)
    max_consequential_steps: int = Field(default=20, ge=0)


class VerificationCriteria(Frozen):
    """How a step's effect is judged. Comes from the runbook, never from code."""

    settle_seconds: float = Field(default=5.0, ge=0)
    window_seconds: float = Field(default=5.0, ge=0)
    samples: int = Field(default=3, ge=1, le=100)
    max_error_rate: float = Field(default=0.02, ge=0, le=1)
    max_queue_depth: float = Field(default=100.0, ge=0)
    max_reading_age_seconds: float = Field(default=30.0, gt=0)
    scope: Literal["all_regions", "step_regions"] = Field(
        default="all_regions",
        description="Judge every declared region, or only the regions the step touched",
    )
    extra_max: dict[str, float] = Field(
        default_factory=dict, description="Extra signal name -> maximum allowed value"
    )


class ApprovalRule(Frozen):
    """The two-person rule for one action (optionally only some of its targets):
    the directive is recorded and waits until `count` distinct, entitled people
    who did not issue it approved its exact decision packet, before it expires.
    Any decline, a hold, the kill switch, a takeover or a newer state change
    cancels it (DESIGN.md invariant 11)."""

    action: ActionType
    targets: tuple[Name, ...] = Field(
        default=(), description="Exact targets this rule covers; () = every target"
    )
    count: int = Field(default=1, ge=1, le=10, description="Distinct approvers required")
    roles: tuple[Role, ...] = Field(
        default=(), description="An approver holds one of these roles; () = any role"
    )
    teams: tuple[Name, ...] = Field(
        default=(), description="An approver belongs to one of these teams; () = any team"
    )
    self_approval: bool = Field(
        default=False,
        description="May the issuer approve their own directive (never counted twice)",
    )
    expires_after: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description="Seconds after the directive was issued; later approvals do not count "
        "and the directive no longer runs",
    )


class ConnHolder(Frozen):
    identity: Name
    team: Name | None = None


class AuthorityBoundary(Frozen):
    """The declared boundary within which the holder of the conn may direct."""

    name: Name
    version: Name
    holder: ConnHolder
    regions: tuple[Name, ...]
    allowed: tuple[ActionGrant, ...]
    reservations: tuple[Reservation, ...] = ()
    blast_radius: BlastRadius = BlastRadius()
    verification: dict[ActionType, VerificationCriteria] = Field(default_factory=dict)
    default_verification: VerificationCriteria = VerificationCriteria()
    takeover_teams: tuple[Name, ...] = ()
    roles_may_direct: tuple[Role, ...] = (Role.COMMANDER, Role.SPECIALIST)
    approvals: tuple[ApprovalRule, ...] = Field(
        default=(), description="Actions (and targets) that need a second person's approval"
    )

    def criteria_for(self, action: ActionType) -> VerificationCriteria:
        return self.verification.get(action, self.default_verification)


# --- verdicts and refusals ----------------------------------------------------------------


class Verdict(StrEnum):
    RECOVERED = "recovered"
    NOT_RECOVERED = "not_recovered"
    CONFLICT = "conflict"
    STALE_METRICS = "stale_metrics"
    MIXED = "mixed"


class RefusalReason(StrEnum):
    """Machine-readable reasons a directive is refused (API and executor alike)."""

    INCIDENT_NOT_OPEN = "incident_not_open"
    INCIDENT_CLOSED = "incident_closed"
    NOT_HUMAN = "not_authenticated_human"
    ROLE_MAY_NOT_DIRECT = "role_may_not_direct"
    NO_AUTHORITY = "no_authority_declared"
    NOT_CONN_HOLDER = "not_conn_holder"
    KILL_SWITCH = "kill_switch_engaged"
    ON_HOLD = "incident_on_hold"
    ACTION_NOT_ALLOWED = "action_not_allowed"
    TARGET_NOT_ALLOWED = "target_not_allowed"
    REGION_NOT_ALLOWED = "region_not_allowed"
    RESERVED_TO_TEAM = "reserved_to_team"
    BLAST_RADIUS = "blast_radius_exceeded"
    STEP_UNVERIFIED = "previous_step_unverified"
    STALE_BASE = "stale_base_position"
    INVALID_BASE = "invalid_base_position"
    EXPECTATION_CONFLICT = "expectation_conflict"
    PARTIAL_STATE = "target_partially_changed"
    DUPLICATE = "duplicate_directive"
    INVALID_DIRECTIVE = "invalid_directive"
    """The directive does not match the schema (no bounded action could be read)."""
    AUTHORITY_WIDENING = "authority_widening_needs_approval"
    """The authority change widens the boundary: it needs a second person's approval."""
    APPROVAL_REQUIRED = "approval_required"
    """The action needs approvals (two-person rule) that are not (all) recorded."""
    APPROVAL_DECLINED = "approval_declined"
    """An entitled approver declined the directive: it never runs."""
    APPROVAL_EXPIRED = "approval_expired"
    """The directive's approval window passed before the quorum was reached."""


class HoldReason(StrEnum):
    MANUAL = "manual"
    VERIFICATION = "verification"
    EXPECTATION_CONFLICT = "expectation_conflict"
    PARTIAL_STATE = "partial_state"
    STEP_FAILED = "step_failed"
