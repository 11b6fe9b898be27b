"""The two-person rule (DESIGN.md invariant 11), as pure functions of the ledger.

An action the authority marks with an `ApprovalRule` runs only after `count`
distinct, entitled approvers (never the issuer, unless the rule says otherwise)
approved the exact decision packet of the directive, before it expires. Any
decline blocks it; a hold, the kill switch, a takeover or a newer state change
cancels it (the executor's re-check refuses it and records why).

- `decision_packet` / `packet_sha256`: what the approver sees, computed from the
  incident's state only; approvals themselves do not change it (so its hash is
  stable while approvers vote), every state change does.
- `check_vote`: may this `ApprovalRecorded` / `ApprovalDeclined` take effect? The
  API answers the approver with it; the fold ignores (and counts) records that fail
  it, e.g. a forged approval naming a stale packet.
- `gate`: may the directive run now, as far as approvals go? The executor asks it
  together with `rules.recheck` right before acting (and before accepting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from conn_core.chain import sha256_json
from conn_core.regions import latest_by_region
from conn_core.rules import Refused
from conn_core.state import DirectiveStatus, IncidentState
from conn_core.undo import planned_undo
from conn_schemas.approvals import (
    ApprovalVote,
    BlastRadiusView,
    ControlPlaneEvidence,
    DecisionPacket,
    PendingApproval,
    RegionEvidence,
)
from conn_schemas.events import ApprovalDeclined, ApprovalRecorded, DirectiveIssued
from conn_schemas.values import (
    Action,
    ActionType,
    Actor,
    ApprovalRule,
    AuthorityBoundary,
    DrainWorkerPool,
    RefusalReason,
    RestartDependencyTier,
    action_target,
    describe_action,
    describe_expectation,
)

Vote = ApprovalRecorded | ApprovalDeclined


@dataclass
class ApprovalTrack:
    """The approvals of one directive that needs them (kept in `IncidentState.approvals`)."""

    correlation_id: str
    rule: ApprovalRule
    issuer: str
    issued_at: datetime
    votes: list[ApprovalVote] = field(default_factory=list)
    approvers: list[str] = field(default_factory=list)
    """Distinct approvers whose approval counts, in order."""
    declined_by: str | None = None
    approved_sha256: str | None = None
    """The packet hash the quorum approved (set when the quorum is reached)."""
    quorum_at: datetime | None = None
    approved_packet: DecisionPacket | None = None
    """The decision packet as the quorum approved it (kept for the record)."""

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.rule.expires_after)

    @property
    def quorum(self) -> bool:
        return len(self.approvers) >= self.rule.count


def rule_for(authority: AuthorityBoundary | None, action: Action) -> ApprovalRule | None:
    """The approval rule covering this exact action, if any (a rule naming the target
    wins over one for every target; among several, the one needing most approvers)."""
    if authority is None:
        return None
    target = action_target(action)
    rules = [r for r in authority.approvals if r.action == action.action]
    named = [r for r in rules if r.targets and target in r.targets]
    general = [r for r in rules if not r.targets]
    chosen = named or general
    if not chosen:
        return None
    return max(chosen, key=lambda r: r.count)


def on_directive(state: IncidentState, event: DirectiveIssued) -> None:
    """Called by the fold for a newly recorded directive: open its approval track."""
    cid = event.correlation_id
    if cid is None or cid in state.approvals:
        return
    rule = rule_for(state.authority, event.payload.action)
    if rule is None:
        return
    state.approvals[cid] = ApprovalTrack(
        correlation_id=cid, rule=rule, issuer=event.actor.id, issued_at=event.occurred_at
    )


# --- the decision packet -------------------------------------------------------------------

_RISK: dict[ActionType, Literal["high", "medium", "low"]] = {
    ActionType.RESTART_DEPENDENCY_TIER: "high",
    ActionType.DRAIN_WORKER_POOL: "medium",
    ActionType.DISABLE_FLAG_RULE: "medium",
}


def decision_packet(state: IncidentState, correlation_id: str) -> DecisionPacket | None:
    """What an approver of `correlation_id` sees, from the ledger only (None: the
    directive does not need approval, or no authority is in force)."""
    track = state.approvals.get(correlation_id)
    record = state.directives.get(correlation_id)
    authority = state.authority
    if track is None or record is None or authority is None:
        return None
    action = record.action
    target = action_target(action)
    limits = authority.blast_radius
    blast = BlastRadiusView(
        consequential_steps_taken=state.consequential_steps,
        max_consequential_steps=limits.max_consequential_steps,
    )
    notes = [
        f"{state.consequential_steps} of {limits.max_consequential_steps} consequential steps taken"
    ]
    if isinstance(action, RestartDependencyTier):
        done = state.restarts.get((action.tier, action.region), 0)
        blast = blast.model_copy(
            update={
                "restarts_of_target": done,
                "max_restarts_per_tier_region": limits.max_restarts_per_tier_region,
            }
        )
        notes.append(
            f"restarts every instance of {action.tier} in {action.region} "
            f"({done} of {limits.max_restarts_per_tier_region} restarts used)"
        )
    elif isinstance(action, DrainWorkerPool):
        drained = tuple(sorted(state.drained_pools.get(action.region, set())))
        blast = blast.model_copy(
            update={
                "drained_pools_in_region": drained,
                "max_drained_pools_per_region": limits.max_drained_pools_per_region,
            }
        )
        notes.append(f"takes pool {action.pool} out of service in {action.region}")
    for reservation in authority.reservations:
        if reservation.action == action.action and reservation.target == target:
            notes.append(f"reserved to team {reservation.team}: {reservation.reason}".rstrip(": "))
    preconditions = [
        f"{track.issuer} still holds the conn",
        "no hold on the incident and the global kill switch released",
        f"no state change after ledger position {state.state_changed_at}",
        "no other consequential step open (one step at a time)",
        f"authority {authority.name}@{authority.version} still in force",
        "the target is observed in a clean state right before the step (pre-step gather)",
    ]
    if record.expectation is not None:
        preconditions.append(f"observed first: {describe_expectation(record.expectation)}")
    evidence = tuple(
        RegionEvidence(
            region=r.region,
            error_rate=r.error_rate,
            queue_depth=r.queue_depth,
            observed_at=r.observed_at,
            verdict_healthy=r.healthy,
        )
        for r in latest_by_region(state, authority.regions)
    )
    control = tuple(
        ControlPlaneEvidence(subject=c.subject, observed=c.observed, matches=c.matches)
        for c in state.last_control_plane
    )
    return DecisionPacket(
        incident_id=state.incident_id,
        correlation_id=correlation_id,
        action=action,
        summary=describe_action(action),
        issued_by=track.issuer,
        issued_at=track.issued_at,
        based_on_state=state.state_changed_at,
        authority=f"{authority.name}@{authority.version}",
        authority_sha256=state.authority_sha256 or "",
        rule=track.rule,
        expires_at=track.expires_at,
        expectation=record.expectation,
        preconditions=tuple(preconditions),
        risk=_RISK.get(action.action, "low"),
        risk_notes=tuple(notes),
        blast_radius=blast,
        evidence=evidence,
        control_plane=control,
        gathered=state.last_observation,
        verification=authority.criteria_for(action.action),
        undo=planned_undo(action),
    )


def packet_sha256(packet: DecisionPacket) -> str:
    return sha256_json(packet.model_dump(mode="json"))


def current_sha256(state: IncidentState, correlation_id: str) -> str | None:
    packet = decision_packet(state, correlation_id)
    return packet_sha256(packet) if packet is not None else None


# --- votes ---------------------------------------------------------------------------------


def entitled(rule: ApprovalRule, actor: Actor) -> bool:
    """The approver holds a role and belongs to a team the rule names (if it names any)."""
    if actor.kind != "human":
        return False
    if rule.roles and not set(actor.roles) & set(rule.roles):
        return False
    return not (rule.teams and actor.team not in rule.teams)


def _who(rule: ApprovalRule) -> str:
    parts = []
    if rule.roles:
        parts.append("role " + "/".join(r.value for r in rule.roles))
    if rule.teams:
        parts.append("team " + "/".join(rule.teams))
    return " in ".join(parts) or "any authenticated human"


def check_vote(state: IncidentState, event: Vote) -> Refused | None:
    """May this approval or decline take effect now (pure)?"""
    actor = event.actor
    cid = event.correlation_id or ""
    if not state.opened:
        return Refused(RefusalReason.INCIDENT_NOT_OPEN, f"incident {state.incident_id} is not open")
    if state.closed:
        return Refused(RefusalReason.INCIDENT_CLOSED, f"incident {state.incident_id} is closed")
    if actor.kind != "human":
        return Refused(RefusalReason.NOT_HUMAN, f"{actor.id} is not an authenticated human")
    track = state.approvals.get(cid)
    record = state.directives.get(cid)
    if track is None or record is None:
        return Refused(
            RefusalReason.INVALID_BASE, f"directive {cid or '(none)'} is not awaiting approval"
        )
    declining = isinstance(event, ApprovalDeclined)
    # A decline still counts until the step starts (the executor re-checks right
    # before the side effect); an approval only while nothing was decided.
    open_to = (
        (DirectiveStatus.ISSUED, DirectiveStatus.ACCEPTED)
        if declining
        else (DirectiveStatus.ISSUED,)
    )
    if record.status not in open_to:
        return Refused(
            RefusalReason.DUPLICATE,
            f"directive {cid} is {record.status.value}: nothing to approve any more",
        )
    if track.declined_by is not None:
        return Refused(
            RefusalReason.APPROVAL_DECLINED, f"directive {cid} was declined by {track.declined_by}"
        )
    if track.quorum and not declining:
        return Refused(RefusalReason.DUPLICATE, f"directive {cid} is approved already")
    if event.occurred_at > track.expires_at:
        return Refused(
            RefusalReason.APPROVAL_EXPIRED,
            f"the approval window of {cid} closed at {track.expires_at.isoformat()}",
        )
    if not entitled(track.rule, actor):
        return Refused(
            RefusalReason.ROLE_MAY_NOT_DIRECT,
            f"{actor.id} may not approve {record.action.action.value} (needs {_who(track.rule)})",
        )
    if isinstance(event, ApprovalDeclined):
        return None  # declining is always safe: any entitled approver blocks it
    if actor.id == track.issuer and not track.rule.self_approval:
        return Refused(
            RefusalReason.SELF_APPROVAL,
            f"{actor.id} issued {cid}: a second person must approve it",
        )
    if actor.id in track.approvers:
        return Refused(RefusalReason.DUPLICATE, f"{actor.id} approved {cid} already")
    current = current_sha256(state, cid)
    if current != event.payload.packet_sha256:
        return Refused(
            RefusalReason.STALE_BASE,
            f"decision packet {event.payload.packet_sha256[:12]} is not the current one "
            f"({(current or '?')[:12]}): read it again and approve that",
        )
    return None


def apply_vote(state: IncidentState, event: Vote) -> bool:
    """Fold one vote; False (and nothing changes) when `check_vote` refuses it."""
    if check_vote(state, event) is not None:
        return False
    track = state.approvals[event.correlation_id or ""]
    approved = isinstance(event, ApprovalRecorded)
    track.votes.append(
        ApprovalVote(
            approver=event.actor.id,
            decision="approved" if approved else "declined",
            at=event.occurred_at,
            packet_sha256=event.payload.packet_sha256,
            counted=True,
            note=event.payload.detail
            if isinstance(event, ApprovalRecorded)
            else event.payload.reason,
        )
    )
    if approved:
        track.approvers.append(event.actor.id)
        if track.quorum:
            track.approved_sha256 = event.payload.packet_sha256
            track.quorum_at = event.occurred_at
            track.approved_packet = decision_packet(state, track.correlation_id)
    else:
        track.declined_by = event.actor.id
    return True


def counted(state: IncidentState, event: Vote) -> bool:
    """Did the fold count this vote (folded into `state`)? A vote the API checked on a
    view that lagged behind the log (say a decline appended after the step started)
    is in the ledger but changes nothing: the approver must be told so."""
    track = state.approvals.get(event.correlation_id or "")
    if track is None:
        return False
    decision = "approved" if isinstance(event, ApprovalRecorded) else "declined"
    return any(
        v.approver == event.actor.id and v.decision == decision and v.at == event.occurred_at
        for v in track.votes
    )


# --- at the moment of acting ---------------------------------------------------------------


def gate(state: IncidentState, correlation_id: str, now: datetime | None = None) -> Refused | None:
    """As far as approvals go, may the directive run now? (pure; with `rules.recheck`)

    The quorum was checked vote by vote when folded (distinct, entitled, not the
    issuer, naming the packet current at the time, in time); anything that changed
    the packet since (a state change, a hold, a takeover, an authority change) makes
    `rules.recheck` refuse the directive as superseded, so the approved packet is
    exactly what runs. Here: no decline, the quorum, and the window (against `now`
    too, when the caller has a clock)."""
    record = state.directives.get(correlation_id)
    if record is None:
        return None
    track = state.approvals.get(correlation_id)
    rule = rule_for(state.authority, record.action)
    if track is None:
        if rule is None:
            return None
        return Refused(
            RefusalReason.APPROVAL_REQUIRED,
            f"{describe_action(record.action)} needs approval, and none was asked for",
        )
    if track.declined_by is not None:
        return Refused(
            RefusalReason.APPROVAL_DECLINED, f"declined by {track.declined_by}: it never runs"
        )
    if (now is not None and now > track.expires_at) or (
        track.quorum_at is not None and track.quorum_at > track.expires_at
    ):
        return Refused(
            RefusalReason.APPROVAL_EXPIRED,
            f"the approval window closed at {track.expires_at.isoformat()}",
        )
    named = {v.packet_sha256 for v in track.votes if v.decision == "approved" and v.counted}
    if track.quorum_at is not None and named != {track.approved_sha256}:
        # Each vote named the packet current when it landed; if the packet changed in
        # between without superseding the directive (only its own records can), the
        # approvers did not approve one and the same packet.
        return Refused(
            RefusalReason.STALE_BASE,
            f"the approvals name {len(named)} different decision packets: approve it again",
        )
    counted = [
        a for a in dict.fromkeys(track.approvers) if a != track.issuer or track.rule.self_approval
    ]
    if len(counted) < track.rule.count or track.quorum_at is None:
        return Refused(
            RefusalReason.APPROVAL_REQUIRED,
            f"{len(counted)} of {track.rule.count} approvals ({_who(track.rule)}, not the issuer)",
        )
    return None


def awaiting(state: IncidentState) -> list[str]:
    """Directives recorded and waiting for approvers (no decision by the executor yet)."""
    return [
        cid
        for cid, track in state.approvals.items()
        if (record := state.directives.get(cid)) is not None
        and record.status is DirectiveStatus.ISSUED
        and not track.quorum
        and track.declined_by is None
    ]


Status = Literal["awaiting", "approved", "declined", "expired", "cancelled", "executed"]


def status(state: IncidentState, correlation_id: str, now: datetime) -> Status:
    track = state.approvals[correlation_id]
    record = state.directives[correlation_id]
    if record.status is DirectiveStatus.REFUSED:
        return "declined" if track.declined_by else "cancelled"
    if record.status is not DirectiveStatus.ISSUED:
        return "executed" if track.quorum else "cancelled"
    if track.declined_by:
        return "declined"
    if track.quorum:
        return "approved"
    if now > track.expires_at:
        return "expired"
    return "awaiting"


def pending(
    state: IncidentState, now: datetime, *, include_done: bool = False
) -> list[PendingApproval]:
    """Directives that need approval, with their decision packets (for the API)."""
    out: list[PendingApproval] = []
    for cid, track in state.approvals.items():
        st = status(state, cid, now)
        if not include_done and st not in ("awaiting", "approved", "expired"):
            continue
        packet = decision_packet(state, cid)
        if st != "awaiting" and track.approved_packet is not None:
            packet = track.approved_packet  # what was approved, not today's picture
        if packet is None:
            continue
        out.append(
            PendingApproval(
                correlation_id=cid,
                status=st,
                required=track.rule.count,
                counted=len(track.approvers),
                votes=tuple(track.votes),
                packet=packet,
                packet_sha256=packet_sha256(packet),
                waiting_since=track.issued_at,
            )
        )
    return out
