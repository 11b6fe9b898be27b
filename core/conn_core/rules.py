"""Decision rules: may this directive or control verb take effect now?

`decide` is the single authority check behind invariants 1, 3, 4, 5 and 7. The
directive API calls it to answer the commander at once; the executor calls it
again, authoritatively, against the log prefix just before the directive. Both
get the same answer from the same prefix because this is a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass

from conn_core.authority import widenings
from conn_core.state import ControlState, DirectiveRecord, DirectiveStatus, IncidentState
from conn_schemas.events import (
    AuthorityChangeApproved,
    AuthorityChangeProposed,
    AuthorityDeclared,
    DirectiveIssuedPayload,
    HoldDeclared,
    ResumeDirected,
    TakeoverAccepted,
    TakeoverRequested,
)
from conn_schemas.observations import FlagRuleState, Observation, TierState, WorkerPoolState
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    READ_ONLY_ACTIONS,
    Action,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    FlagRuleExpectation,
    RefusalReason,
    RestartDependencyTier,
    Role,
    ScaleWorkerPool,
    TierExpectation,
    WorkerPoolExpectation,
    action_regions,
    action_target,
    describe_expectation,
)


@dataclass(frozen=True)
class Accepted:
    consequential: bool


@dataclass(frozen=True)
class Refused:
    reason: RefusalReason
    detail: str


Decision = Accepted | Refused


def decide(
    state: IncidentState,
    directive: DirectiveIssuedPayload,
    actor: Actor,
    control: ControlState,
) -> Decision:
    """Decide a directive against the incident's state *before* it (pure)."""
    action = directive.action
    consequential = action.action in CONSEQUENTIAL_ACTIONS

    if not state.opened:
        return Refused(RefusalReason.INCIDENT_NOT_OPEN, f"incident {state.incident_id} is not open")
    if state.closed:
        return Refused(RefusalReason.INCIDENT_CLOSED, f"incident {state.incident_id} is closed")
    if actor.kind != "human":
        return Refused(RefusalReason.NOT_HUMAN, f"{actor.id} is not an authenticated human")
    authority = state.authority
    if authority is None or state.holder is None:
        return Refused(RefusalReason.NO_AUTHORITY, "no authority boundary has been declared")
    if not set(actor.roles) & set(authority.roles_may_direct):
        roles = ", ".join(r.value for r in actor.roles) or "none"
        return Refused(RefusalReason.ROLE_MAY_NOT_DIRECT, f"roles [{roles}] may not direct")
    if actor.id != state.holder.identity:
        return Refused(
            RefusalReason.NOT_CONN_HOLDER,
            f"{actor.id} does not hold the conn ({state.holder.identity} does)",
        )
    if directive.based_on_sequence > state.sequence:
        return Refused(
            RefusalReason.INVALID_BASE,
            f"based on position {directive.based_on_sequence}, but the ledger is at "
            f"{state.sequence}",
        )
    if directive.based_on_sequence < state.state_changed_at:
        return Refused(
            RefusalReason.STALE_BASE,
            f"based on position {directive.based_on_sequence}, but the state changed at "
            f"{state.state_changed_at}: re-read the ledger",
        )
    read_only = action.action in READ_ONLY_ACTIONS
    if control.kill_switch and not read_only:
        return Refused(RefusalReason.KILL_SWITCH, f"global kill switch engaged: {control.reason}")
    if state.hold is not None and not read_only:
        return Refused(
            RefusalReason.ON_HOLD,
            f"incident on hold since position {state.hold.since_sequence} "
            f"({state.hold.reason.value}: {state.hold.detail})",
        )

    refusal = _check_boundary(state, directive, actor)
    if refusal is not None:
        return refusal

    if consequential and state.open_step is not None:
        return Refused(
            RefusalReason.STEP_UNVERIFIED,
            f"previous step {state.open_step} is not verified yet",
        )
    return Accepted(consequential=consequential)


def _check_boundary(
    state: IncidentState,
    directive: DirectiveIssuedPayload,
    actor: Actor,
    *,
    itself_started: bool = False,
) -> Refused | None:
    authority = state.authority
    assert authority is not None
    action = directive.action
    grants = [g for g in authority.allowed if g.action == action.action]
    if not grants:
        return Refused(
            RefusalReason.ACTION_NOT_ALLOWED,
            f"{action.action.value} is not allowed by authority {authority.name}@{authority.version}",
        )
    regions = action_regions(action)
    named = list(regions)
    if directive.expectation is not None:
        named.append(directive.expectation.region)
    for region in named:
        if region not in authority.regions:
            return Refused(
                RefusalReason.REGION_NOT_ALLOWED,
                f"region {region} is not declared by authority "
                f"{authority.name}@{authority.version} (declared: "
                f"{', '.join(authority.regions)})",
            )
    target = action_target(action)
    for reservation in authority.reservations:
        if reservation.action == action.action and reservation.target == target:
            if actor.team != reservation.team:
                return Refused(
                    RefusalReason.RESERVED_TO_TEAM,
                    f"{action.action.value} of {target} is reserved to team {reservation.team}"
                    + (f" ({reservation.reason})" if reservation.reason else ""),
                )
            return _check_blast_radius(state, directive, itself_started=itself_started)
    granted = [
        g
        for g in grants
        if (not g.targets or target in g.targets)
        and (not g.regions or all(r in g.regions for r in regions))
    ]
    if not granted:
        if all(g.targets and target not in g.targets for g in grants):
            return Refused(
                RefusalReason.TARGET_NOT_ALLOWED,
                f"{action.action.value} of {target} is outside the declared targets",
            )
        return Refused(
            RefusalReason.REGION_NOT_ALLOWED,
            f"{action.action.value} in {', '.join(regions)} is outside the granted regions",
        )
    return _check_blast_radius(state, directive, itself_started=itself_started)


def _check_blast_radius(
    state: IncidentState, directive: DirectiveIssuedPayload, *, itself_started: bool = False
) -> Refused | None:
    """`itself_started`: the directive's own StepStarted is already folded into the
    counters (a re-check right before its side effect) and must not count against it."""
    authority = state.authority
    assert authority is not None
    limits = authority.blast_radius
    action = directive.action
    own = 1 if itself_started else 0
    steps = state.consequential_steps - own
    if action.action in CONSEQUENTIAL_ACTIONS and steps >= limits.max_consequential_steps:
        return Refused(
            RefusalReason.BLAST_RADIUS,
            f"{steps} consequential steps taken; the limit is {limits.max_consequential_steps}",
        )
    if isinstance(action, DrainWorkerPool):
        drained = state.drained_pools.get(action.region, set()) - {action.pool}
        if len(drained) >= limits.max_drained_pools_per_region:
            return Refused(
                RefusalReason.BLAST_RADIUS,
                f"{len(drained)} pool(s) already drained in {action.region} "
                f"({', '.join(sorted(drained))}); the limit is "
                f"{limits.max_drained_pools_per_region}",
            )
    if isinstance(action, RestartDependencyTier):
        done = state.restarts.get((action.tier, action.region), 0) - own
        if done >= limits.max_restarts_per_tier_region:
            return Refused(
                RefusalReason.BLAST_RADIUS,
                f"{action.tier} in {action.region} restarted {done} time(s); the limit is "
                f"{limits.max_restarts_per_tier_region}",
            )
    return None


# --- at the moment of acting --------------------------------------------------------------


def recheck(
    state: IncidentState,
    correlation_id: str,
    control: ControlState,
    *,
    executor_id: str | None = None,
    owns_claim: bool = False,
) -> Refused | None:
    """May the directive `correlation_id` still have its side effect now? (pure)

    `state` is the incident folded up to the latest record of its partition (the
    directive and everything after it). The executor asks this immediately before a
    side effect: `decide` only saw the log before the directive, and a close, a
    takeover, an authority change, a hold (manual, or derived from a failing
    verification, a failed step or a conflict), the kill switch or any other state
    change may have landed since. The directive's own records (its DirectiveAccepted,
    its pre-step StateGathered, and its StepStarted by `executor_id`) never make it
    refuse itself. With `owns_claim` (the caller holds the directive's fenced claim),
    a StepStarted by another executor is only the intent of one that lost the claim:
    the fenced gate, not the log, decides who acts, so it does not refuse either.
    A directive the log shows as finished (refused, succeeded, failed, unknown) is
    refused as a duplicate.
    """
    record = state.directives.get(correlation_id)
    if record is None or record.issuer is None:
        return Refused(
            RefusalReason.INVALID_BASE, f"directive {correlation_id} is not in the incident's log"
        )
    started_by_me = record.status is DirectiveStatus.STARTED and (
        owns_claim or (executor_id is not None and record.started_by == executor_id)
    )
    if record.status not in (DirectiveStatus.ISSUED, DirectiveStatus.ACCEPTED) and not (
        started_by_me
    ):
        return Refused(
            RefusalReason.DUPLICATE,
            f"directive {correlation_id} is already {record.status.value} in the log",
        )
    if not state.opened:
        return Refused(RefusalReason.INCIDENT_NOT_OPEN, f"incident {state.incident_id} is not open")
    if state.closed:
        return Refused(
            RefusalReason.INCIDENT_CLOSED,
            f"incident {state.incident_id} was closed after this directive",
        )
    read_only = record.action.action in READ_ONLY_ACTIONS
    if control.kill_switch and not read_only:
        return Refused(RefusalReason.KILL_SWITCH, f"global kill switch engaged: {control.reason}")
    if state.hold is not None and not read_only:
        return Refused(
            RefusalReason.ON_HOLD,
            f"incident on hold since position {state.hold.since_sequence} "
            f"({state.hold.reason.value}: {state.hold.detail})",
        )
    issuer = record.issuer
    if state.holder is None or state.holder.identity != issuer.id:
        holder = state.holder.identity if state.holder else "nobody"
        return Refused(
            RefusalReason.NOT_CONN_HOLDER,
            f"{issuer.id} no longer holds the conn ({holder} does)",
        )
    authority = state.authority
    if authority is None:
        return Refused(RefusalReason.NO_AUTHORITY, "no authority boundary is in force")
    if not set(issuer.roles) & set(authority.roles_may_direct):
        roles = ", ".join(r.value for r in issuer.roles) or "none"
        return Refused(RefusalReason.ROLE_MAY_NOT_DIRECT, f"roles [{roles}] may no longer direct")
    refusal = _check_boundary(
        state, _payload_of(record), issuer, itself_started=record.status is DirectiveStatus.STARTED
    )
    if refusal is not None:
        return Refused(refusal.reason, f"{refusal.detail} (authority in force now)")
    if record.consequential and state.open_step not in (None, correlation_id):
        return Refused(
            RefusalReason.STEP_UNVERIFIED,
            f"step {state.open_step} is open and not verified",
        )
    if record.superseded_at is not None:
        return Refused(
            RefusalReason.STALE_BASE,
            f"the incident's state changed at position {record.superseded_at} "
            f"({record.superseded_by}), after this directive (position "
            f"{record.issued_sequence}): re-read the ledger and re-issue it",
        )
    return None


def _payload_of(record: DirectiveRecord) -> DirectiveIssuedPayload:
    return DirectiveIssuedPayload(
        action=record.action,
        expectation=record.expectation,
        based_on_sequence=record.based_on_sequence,
    )


def check_observation(
    directive: DirectiveIssuedPayload, observation: Observation
) -> Refused | None:
    """Before a consequential step: does the live state match what the commander
    expects, and is the target in a clean state to act on? Otherwise refuse
    rather than guess."""
    exp = directive.expectation
    if exp is not None:
        observed = _observed_for_expectation(exp, observation)
        if observed is None:
            return Refused(
                RefusalReason.EXPECTATION_CONFLICT,
                f"expected {describe_expectation(exp)}, but it could not be observed",
            )
        if not observed[0]:
            return Refused(
                RefusalReason.EXPECTATION_CONFLICT,
                f"expected {describe_expectation(exp)}, observed {observed[1]}",
            )
    action = directive.action
    if isinstance(action, DisableFlagRule):
        rule = _observed_rule(observation, action)
        if rule is None:
            return Refused(RefusalReason.EXPECTATION_CONFLICT, f"rule {action.rule} not observable")
        if not rule.enabled:
            return Refused(
                RefusalReason.PARTIAL_STATE,
                f"rule {action.rule} of {action.flag} is already disabled in {action.region}",
            )
    elif isinstance(action, DrainWorkerPool):
        pool = _observed_pool(observation, action)
        if pool is None:
            return Refused(RefusalReason.EXPECTATION_CONFLICT, f"pool {action.pool} not observable")
        if pool.desired_replicas == 0 or pool.ready_replicas != pool.desired_replicas:
            return Refused(
                RefusalReason.PARTIAL_STATE,
                f"pool {action.pool} in {action.region} is mid-change "
                f"(desired {pool.desired_replicas}, ready {pool.ready_replicas})",
            )
    elif isinstance(action, EnableFlagRule | ScaleWorkerPool):
        return check_inverse_observation(action, observation)
    elif isinstance(action, RestartDependencyTier):
        tier = _observed_tier(observation, action)
        if tier is None:
            return Refused(RefusalReason.EXPECTATION_CONFLICT, f"tier {action.tier} not observable")
        if tier.restarting:
            return Refused(
                RefusalReason.PARTIAL_STATE,
                f"tier {action.tier} in {action.region} is already restarting",
            )
    return None


def _observed_rule(
    observation: Observation, action: DisableFlagRule | EnableFlagRule
) -> FlagRuleState | None:
    """The observed state of the flag rule `action` names (None: not observed)."""
    key = (action.flag, action.rule, action.region)
    return next((f for f in observation.flags if (f.flag, f.rule, f.region) == key), None)


def _observed_pool(
    observation: Observation, action: DrainWorkerPool | ScaleWorkerPool
) -> WorkerPoolState | None:
    """The observed state of the worker pool `action` names (None: not observed)."""
    key = (action.pool, action.region)
    return next((p for p in observation.pools if (p.pool, p.region) == key), None)


def _observed_tier(observation: Observation, action: RestartDependencyTier) -> TierState | None:
    """The observed state of the dependency tier `action` names (None: not observed)."""
    key = (action.tier, action.region)
    return next((t for t in observation.tiers if (t.tier, t.region) == key), None)


def observed_target(
    observation: Observation, action: Action
) -> FlagRuleState | WorkerPoolState | TierState | None:
    """The observed state of the exact target `action` names: its flag rule, worker pool or
    dependency tier in its region (None: not observed, or an action without a target)."""
    if isinstance(action, DisableFlagRule | EnableFlagRule):
        return _observed_rule(observation, action)
    if isinstance(action, DrainWorkerPool | ScaleWorkerPool):
        return _observed_pool(observation, action)
    if isinstance(action, RestartDependencyTier):
        return _observed_tier(observation, action)
    return None


def check_inverse_observation(
    action: EnableFlagRule | ScaleWorkerPool, observation: Observation
) -> Refused | None:
    """Before an inverse step (an undo): the target is observable, clean, and not already
    in the state the step would produce (a second undo of the same step is refused)."""
    if isinstance(action, EnableFlagRule):
        rule = _observed_rule(observation, action)
        if rule is None:
            return Refused(RefusalReason.EXPECTATION_CONFLICT, f"rule {action.rule} not observable")
        if rule.enabled:
            return Refused(
                RefusalReason.PARTIAL_STATE,
                f"rule {action.rule} of {action.flag} is already enabled in {action.region}",
            )
        return None
    pool = _observed_pool(observation, action)
    if pool is None:
        return Refused(RefusalReason.EXPECTATION_CONFLICT, f"pool {action.pool} not observable")
    if pool.ready_replicas != pool.desired_replicas:
        return Refused(
            RefusalReason.PARTIAL_STATE,
            f"pool {action.pool} in {action.region} is mid-change "
            f"(desired {pool.desired_replicas}, ready {pool.ready_replicas})",
        )
    if pool.desired_replicas == action.replicas:
        return Refused(
            RefusalReason.PARTIAL_STATE,
            f"pool {action.pool} in {action.region} is already at {action.replicas} replicas",
        )
    return None


def _observed_for_expectation(
    exp: FlagRuleExpectation | WorkerPoolExpectation | TierExpectation, obs: Observation
) -> tuple[bool, str] | None:
    if isinstance(exp, FlagRuleExpectation):
        for f in obs.flags:
            if (f.flag, f.rule, f.region) == (exp.flag, exp.rule, exp.region):
                return f.enabled == exp.enabled, "enabled" if f.enabled else "disabled"
        return None
    if isinstance(exp, WorkerPoolExpectation):
        for p in obs.pools:
            if (p.pool, p.region) == (exp.pool, exp.region):
                return p.drained == exp.drained, (
                    f"desired {p.desired_replicas}, ready {p.ready_replicas}"
                )
        return None
    for t in obs.tiers:
        if (t.tier, t.region) == (exp.tier, exp.region):
            return t.healthy == exp.healthy, "healthy" if t.healthy else "unhealthy"
    return None


# --- control verbs ---------------------------------------------------------------------

ControlEvent = HoldDeclared | ResumeDirected | TakeoverRequested | TakeoverAccepted


def check_control(state: IncidentState, event: ControlEvent) -> Refused | None:
    """May this control verb take effect? The API answers with it; the fold
    ignores (and counts) control events that fail it, e.g. ones injected into
    Kafka by something other than the API."""
    actor = event.actor
    if not state.opened:
        return Refused(RefusalReason.INCIDENT_NOT_OPEN, f"incident {state.incident_id} is not open")
    if state.closed:
        return Refused(RefusalReason.INCIDENT_CLOSED, f"incident {state.incident_id} is closed")
    if isinstance(event, HoldDeclared):
        # Stopping is always allowed to anyone authenticated who may act on incidents,
        # and to Conn's own services.
        if actor.kind == "service" or set(actor.roles) & {
            Role.COMMANDER,
            Role.SPECIALIST,
            Role.ADMIN,
        }:
            return None
        return Refused(RefusalReason.ROLE_MAY_NOT_DIRECT, f"{actor.id} may not declare a hold")
    if actor.kind != "human":
        return Refused(RefusalReason.NOT_HUMAN, f"{actor.id} is not an authenticated human")
    if state.authority is None or state.holder is None:
        return Refused(RefusalReason.NO_AUTHORITY, "no authority boundary has been declared")
    if isinstance(event, ResumeDirected | TakeoverRequested):
        if actor.id != state.holder.identity:
            return Refused(
                RefusalReason.NOT_CONN_HOLDER,
                f"{actor.id} does not hold the conn ({state.holder.identity} does)",
            )
        if isinstance(event, ResumeDirected) and state.hold is None:
            return Refused(RefusalReason.DUPLICATE, "the incident is not on hold")
        if isinstance(event, TakeoverRequested):
            team = event.payload.to_team
            if team not in state.authority.takeover_teams:
                return Refused(
                    RefusalReason.TARGET_NOT_ALLOWED,
                    f"team {team} may not receive a takeover (allowed: "
                    f"{', '.join(state.authority.takeover_teams) or 'none'})",
                )
        return None
    # TakeoverAccepted: only the addressed team, explicitly, naming the exact hash of
    # the current packet (invariant 9).
    team = event.payload.team
    if team not in state.authority.takeover_teams:
        return Refused(RefusalReason.TARGET_NOT_ALLOWED, f"team {team} may not take over")
    if actor.team != team or Role.SPECIALIST not in actor.roles:
        return Refused(
            RefusalReason.ROLE_MAY_NOT_DIRECT, f"{actor.id} is not a specialist of team {team}"
        )
    requested = state.takeover_requested_to
    if requested is not None and requested != team:
        # Also in the window before the handoff packet is published: once a takeover
        # was requested for a team, no other team may accept any packet.
        return Refused(
            RefusalReason.TARGET_NOT_ALLOWED, f"the takeover was requested for team {requested}"
        )
    packet = state.last_packet
    if packet is None:
        return Refused(RefusalReason.INVALID_BASE, "no takeover packet has been published")
    if packet.to_team is not None and packet.to_team != team:
        return Refused(
            RefusalReason.TARGET_NOT_ALLOWED, f"the packet is addressed to team {packet.to_team}"
        )
    if packet.sha256 != event.payload.packet_sha256:
        return Refused(
            RefusalReason.STALE_BASE,
            f"packet {event.payload.packet_sha256[:12]} is not the latest ({packet.sha256[:12]})",
        )
    if state.packet_changed_at > packet.basis:
        return Refused(
            RefusalReason.STALE_BASE,
            f"packet {packet.sha256[:12]} describes position {packet.basis}, but the incident "
            f"changed at {state.packet_changed_at}: a newer packet is due; read it and accept that",
        )
    return None


# --- authority changes -------------------------------------------------------------------

AuthorityEvent = AuthorityDeclared | AuthorityChangeProposed | AuthorityChangeApproved

APPROVER_ROLES = frozenset({Role.COMMANDER, Role.ADMIN})
"""Who may approve a widening authority change (never the holder, never the proposer)."""


def check_authority(state: IncidentState, event: AuthorityEvent) -> Refused | None:
    """May this authority record take effect (invariant 4)? The API answers with it;
    the fold ignores (and counts) records that fail it.

    - The first declaration: a human commander, who then holds the conn.
    - A later declaration by the holder may only narrow the boundary (`widenings`
      is empty), unless it names an approved proposal (`approval`).
    - A widening is proposed by the holder (AuthorityChangeProposed) and approved by
      a second authorized person who is neither the holder nor the proposer
      (AuthorityChangeApproved); the approved declaration is appended by that person,
      against the same authority in force and while the proposer still holds the conn.
    """
    actor = event.actor
    if not state.opened:
        return Refused(RefusalReason.INCIDENT_NOT_OPEN, f"incident {state.incident_id} is not open")
    if state.closed:
        return Refused(RefusalReason.INCIDENT_CLOSED, f"incident {state.incident_id} is closed")
    if actor.kind != "human":
        return Refused(RefusalReason.NOT_HUMAN, f"{actor.id} is not an authenticated human")
    if isinstance(event, AuthorityChangeApproved):
        return _check_approval(state, event)
    if isinstance(event, AuthorityDeclared) and event.payload.approval is not None:
        return _check_approved_declaration(state, event)
    if Role.COMMANDER not in actor.roles:
        return Refused(
            RefusalReason.ROLE_MAY_NOT_DIRECT, f"{actor.id} is not a commander: may not declare"
        )
    holder = state.holder
    if holder is not None and actor.id != holder.identity:
        return Refused(
            RefusalReason.NOT_CONN_HOLDER,
            f"{actor.id} does not hold the conn ({holder.identity} does)",
        )
    current = state.authority
    if isinstance(event, AuthorityDeclared):
        if current is None:
            return None
        wider = widenings(current, event.payload.authority)
        if wider:
            return Refused(
                RefusalReason.AUTHORITY_WIDENING,
                "the change widens the boundary in force ("
                + "; ".join(wider[:5])
                + (f"; and {len(wider) - 5} more" if len(wider) > 5 else "")
                + "): it needs the approval of a second commander or admin who does not "
                "hold the conn",
            )
        return None
    # AuthorityChangeProposed
    p = event.payload
    if current is None or state.authority_sha256 is None:
        return Refused(RefusalReason.NO_AUTHORITY, "no authority is in force: declare one")
    if p.base_sha256 != state.authority_sha256:
        return Refused(
            RefusalReason.STALE_BASE, "the authority in force changed: propose against it again"
        )
    if p.proposal_id in state.authority_proposals:
        return Refused(RefusalReason.DUPLICATE, f"proposal {p.proposal_id} exists already")
    if not widenings(current, p.authority):
        return Refused(
            RefusalReason.INVALID_DIRECTIVE,
            "the change does not widen the boundary: declare it directly",
        )
    return None


def _check_approval(state: IncidentState, event: AuthorityChangeApproved) -> Refused | None:
    actor = event.actor
    proposal = state.authority_proposals.get(event.payload.proposal_id)
    if proposal is None:
        return Refused(
            RefusalReason.INVALID_BASE, f"no authority proposal {event.payload.proposal_id}"
        )
    if proposal.approved_by is not None:
        return Refused(RefusalReason.DUPLICATE, f"already approved by {proposal.approved_by}")
    if proposal.content_sha256 != event.payload.content_sha256:
        return Refused(RefusalReason.INVALID_BASE, "the approval names different content")
    if proposal.base_sha256 != state.authority_sha256:
        return Refused(
            RefusalReason.STALE_BASE, "the authority in force changed since the proposal"
        )
    if state.holder is None or state.holder.identity != proposal.proposer:
        return Refused(RefusalReason.NOT_CONN_HOLDER, "the conn moved since the proposal was made")
    if not set(actor.roles) & APPROVER_ROLES:
        return Refused(
            RefusalReason.ROLE_MAY_NOT_DIRECT,
            f"{actor.id} may not approve authority changes (commander or admin only)",
        )
    holder = state.holder.identity if state.holder else None
    if actor.id in (holder, proposal.proposer):
        return Refused(
            RefusalReason.AUTHORITY_WIDENING,
            f"{actor.id} proposed or holds the conn: a second person must approve a wider "
            "boundary (the holder can never widen their own)",
        )
    return None


def _check_approved_declaration(state: IncidentState, event: AuthorityDeclared) -> Refused | None:
    p = event.payload
    proposal = state.authority_proposals.get(p.approval or "")
    if proposal is None:
        return Refused(RefusalReason.INVALID_BASE, f"no authority proposal {p.approval}")
    if proposal.approved_by is None:
        return Refused(RefusalReason.AUTHORITY_WIDENING, f"proposal {p.approval} is not approved")
    if proposal.applied:
        return Refused(RefusalReason.DUPLICATE, f"proposal {p.approval} was applied already")
    if event.actor.id != proposal.approved_by:
        return Refused(
            RefusalReason.AUTHORITY_WIDENING,
            f"only the approver ({proposal.approved_by}) applies proposal {p.approval}",
        )
    if proposal.content_sha256 != p.content_sha256 or proposal.authority != p.authority:
        return Refused(RefusalReason.INVALID_BASE, "the declaration is not the approved content")
    if proposal.base_sha256 != state.authority_sha256:
        return Refused(
            RefusalReason.STALE_BASE, "the authority in force changed since the proposal"
        )
    if state.holder is None or state.holder.identity != proposal.proposer:
        return Refused(RefusalReason.NOT_CONN_HOLDER, "the conn moved since the proposal was made")
    return None
