"""Decision rules: may this directive or control verb take effect now?

`decide` is the single authority check behind invariants 1, 3, 4, 5 and 7. The
directive API calls it to answer the commander at once; the executor calls it
again, authoritatively, against the log prefix just before the directive. Both
get the same answer from the same prefix because this is a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass

from conn_core.state import ControlState, IncidentState
from conn_schemas.events import (
    DirectiveIssuedPayload,
    HoldDeclared,
    ResumeDirected,
    TakeoverAccepted,
    TakeoverRequested,
)
from conn_schemas.observations import Observation
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    READ_ONLY_ACTIONS,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    FlagRuleExpectation,
    RefusalReason,
    RestartDependencyTier,
    Role,
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
    state: IncidentState, directive: DirectiveIssuedPayload, actor: Actor
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
    for region in regions:
        if region not in authority.regions:
            return Refused(
                RefusalReason.REGION_NOT_ALLOWED, f"region {region} is outside the declared regions"
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
            return _check_blast_radius(state, directive)
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
    return _check_blast_radius(state, directive)


def _check_blast_radius(state: IncidentState, directive: DirectiveIssuedPayload) -> Refused | None:
    authority = state.authority
    assert authority is not None
    limits = authority.blast_radius
    action = directive.action
    if action.action in CONSEQUENTIAL_ACTIONS and (
        state.consequential_steps >= limits.max_consequential_steps
    ):
        return Refused(
            RefusalReason.BLAST_RADIUS,
            f"{state.consequential_steps} consequential steps taken; the limit is "
            f"{limits.max_consequential_steps}",
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
        done = state.restarts.get((action.tier, action.region), 0)
        if done >= limits.max_restarts_per_tier_region:
            return Refused(
                RefusalReason.BLAST_RADIUS,
                f"{action.tier} in {action.region} restarted {done} time(s); the limit is "
                f"{limits.max_restarts_per_tier_region}",
            )
    return None


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
        rule = next(
            (
                f
                for f in observation.flags
                if (f.flag, f.rule, f.region) == (action.flag, action.rule, action.region)
            ),
            None,
        )
        if rule is None:
            return Refused(RefusalReason.EXPECTATION_CONFLICT, f"rule {action.rule} not observable")
        if not rule.enabled:
            return Refused(
                RefusalReason.PARTIAL_STATE,
                f"rule {action.rule} of {action.flag} is already disabled in {action.region}",
            )
    elif isinstance(action, DrainWorkerPool):
        pool = next(
            (p for p in observation.pools if (p.pool, p.region) == (action.pool, action.region)),
            None,
        )
        if pool is None:
            return Refused(RefusalReason.EXPECTATION_CONFLICT, f"pool {action.pool} not observable")
        if pool.desired_replicas == 0 or pool.ready_replicas != pool.desired_replicas:
            return Refused(
                RefusalReason.PARTIAL_STATE,
                f"pool {action.pool} in {action.region} is mid-change "
                f"(desired {pool.desired_replicas}, ready {pool.ready_replicas})",
            )
    elif isinstance(action, RestartDependencyTier):
        tier = next(
            (t for t in observation.tiers if (t.tier, t.region) == (action.tier, action.region)),
            None,
        )
        if tier is None:
            return Refused(RefusalReason.EXPECTATION_CONFLICT, f"tier {action.tier} not observable")
        if tier.restarting:
            return Refused(
                RefusalReason.PARTIAL_STATE,
                f"tier {action.tier} in {action.region} is already restarting",
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
    # TakeoverAccepted
    team = event.payload.team
    if team not in state.authority.takeover_teams:
        return Refused(RefusalReason.TARGET_NOT_ALLOWED, f"team {team} may not take over")
    if actor.team != team or Role.SPECIALIST not in actor.roles:
        return Refused(
            RefusalReason.ROLE_MAY_NOT_DIRECT, f"{actor.id} is not a specialist of team {team}"
        )
    packet = state.last_packet
    if packet is None:
        return Refused(RefusalReason.INVALID_BASE, "no takeover packet has been published")
    if packet.sha256 != event.payload.packet_sha256:
        return Refused(
            RefusalReason.STALE_BASE,
            f"packet {event.payload.packet_sha256[:12]} is not the latest ({packet.sha256[:12]})",
        )
    if packet.to_team not in (None, team) and state.takeover_requested_to not in (None, team):
        return Refused(
            RefusalReason.TARGET_NOT_ALLOWED, f"the takeover was requested for {packet.to_team}"
        )
    return None
