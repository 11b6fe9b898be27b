"""Pure builders of the typed views of an incident (`conn_schemas.bridge`,
`conn_schemas.packet` parts): the one place where fold state becomes the bridge state
that the API, the takeover packet, the packager's read model and the timeline show.
No I/O; the same state gives the same view.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import NamedTuple

from conn_core import approvals
from conn_core.redaction import redact
from conn_core.regions import latest_by_region
from conn_core.state import DirectiveRecord, DirectiveStatus, IncidentState
from conn_schemas.bridge import (
    MAX_BRIDGE_DIRECTIVES,
    BridgeCounts,
    BridgeState,
    BridgeSummary,
    IncidentStatus,
    PacketReference,
)
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
    MAX_DETAIL,
    Action,
    ConnHolder,
    RefusalReason,
    Verdict,
    action_regions,
    action_target,
    clean_text,
    describe_action,
)


class _ItemKey(NamedTuple):
    """Every input of a directive's item. A datetime comes with its UTC offset: equal
    instants in different zones compare equal but are written differently."""

    correlation_id: str
    action: Action
    actor_id: str
    issued_sequence: int
    consequential: bool
    status: DirectiveStatus
    verdict: Verdict | None
    refusal: RefusalReason | None
    refusal_detail: str
    started_at: tuple[datetime | None, timedelta | None]
    finished_at: tuple[datetime | None, timedelta | None]


def _instant(at: datetime | None) -> tuple[datetime | None, timedelta | None]:
    return (at, at.utcoffset() if at is not None else None)


def directive_item(record: DirectiveRecord) -> DirectiveItem:
    """The record's item. Memoised on every input (`_ItemKey`; the item is frozen): the
    bridge lists up to MAX_BRIDGE_DIRECTIVES directives and is rebuilt after every
    batch, while a directive's item changes only when its own record does."""
    return _directive_item(
        _ItemKey(
            record.correlation_id,
            record.action,
            record.actor_id,
            record.issued_sequence,
            record.consequential,
            record.status,
            record.verdict,
            record.refusal,
            record.refusal_detail,
            _instant(record.started_at),
            _instant(record.finished_at),
        )
    )


@functools.lru_cache(maxsize=8192)
def _directive_item(key: _ItemKey) -> DirectiveItem:
    return DirectiveItem(
        correlation_id=key.correlation_id,
        action=key.action,
        description=clean_text(describe_action(key.action), MAX_DETAIL),
        target=action_target(key.action),
        regions=action_regions(key.action),
        consequential=key.consequential,
        issued_by=key.actor_id,
        issued_sequence=key.issued_sequence,
        status=key.status.value,
        verdict=key.verdict,
        refusal=key.refusal,
        refusal_detail=clean_text(redact(key.refusal_detail), MAX_DETAIL, multiline=True),
        started_at=key.started_at[0],
        finished_at=key.finished_at[0],
    )


def last_directed_step(state: IncidentState) -> DirectiveRecord | None:
    """The last consequential step accepted; failing that, the last directive issued."""
    if state.last_step is not None and state.last_step in state.directives:
        return state.directives[state.last_step]
    if not state.directives:
        return None
    return max(state.directives.values(), key=lambda d: d.issued_sequence)


def region_names(state: IncidentState) -> list[str]:
    names: list[str] = list(state.authority.regions) if state.authority else []
    for region in sorted({*state.last_readings, *state.last_verification}):
        if region not in names:
            names.append(region)
    return names


def region_health(state: IncidentState, as_of: datetime) -> tuple[RegionHealth, ...]:
    """Health of every region the authority names or the ledger has readings or a
    verification of, with the age of each reading at `as_of`."""
    return latest_by_region(state, region_names(state), as_of)


def authority_in_force(state: IncidentState) -> AuthorityInForce | None:
    if state.authority is None:
        return None
    holder = state.holder or state.authority.holder
    return AuthorityInForce(
        name=state.authority.name,
        version=state.authority.version,
        sha256=state.authority_sha256,
        holder=holder.identity,
        holder_team=holder.team,
        takeover_teams=state.authority.takeover_teams,
    )


def hold_info(state: IncidentState) -> HoldInfo | None:
    hold = state.hold
    if hold is None:
        return None
    return HoldInfo(
        reason=hold.reason,
        detail=clean_text(redact(hold.detail), MAX_DETAIL, multiline=True),
        since_sequence=hold.since_sequence,
        correlation_id=hold.correlation_id,
    )


def control_plane(state: IncidentState) -> tuple[ControlPlaneItem, ...]:
    return tuple(
        ControlPlaneItem(
            subject=c.subject, expected=c.expected, observed=c.observed, matches=c.matches
        )
        for c in state.last_control_plane
    )


def by_sequence(
    records: list[DirectiveRecord], limit: int | None = None
) -> tuple[DirectiveItem, ...]:
    """Directive items in ledger order; with `limit`, only the most recent ones."""
    ordered = sorted(records, key=lambda d: d.issued_sequence)
    if limit is not None:
        ordered = ordered[-limit:]
    return tuple(directive_item(r) for r in ordered)


def pending_approvals(
    state: IncidentState, limit: int | None = None
) -> tuple[PendingApprovalItem, ...]:
    """Directives waiting for a second person, with the decision packet to approve."""
    out = []
    for cid in approvals.awaiting(state):
        track = state.approvals[cid]
        out.append(
            PendingApprovalItem(
                correlation_id=cid,
                description=describe_action(state.directives[cid].action),
                issued_by=track.issuer,
                required=track.rule.count,
                approved_by=tuple(track.approvers),
                decision_packet_sha256=approvals.current_sha256(state, cid) or "",
                expires_at=track.expires_at,
            )
        )
    return tuple(out if limit is None else out[-limit:])


def incident_status(state: IncidentState) -> IncidentStatus:
    return "closed" if state.closed else ("on_hold" if state.on_hold else "open")


def packet_reference(state: IncidentState) -> PacketReference | None:
    p = state.last_packet
    if p is None:
        return None
    return PacketReference(
        sha256=p.sha256,
        to_team=p.to_team,
        trigger="handoff" if p.trigger == "handoff" else "hold",
        sequence=p.sequence,
        describes_sequence=p.basis,
        current=state.packet_changed_at <= p.basis,
    )


def bridge_counts(state: IncidentState) -> BridgeCounts:
    return BridgeCounts(
        directives=len(state.directives),
        consequential_steps=state.consequential_steps,
        holds=state.holds_declared,
        takeovers_accepted=state.takeovers_accepted,
        ignored_controls=state.ignored_controls,
        ignored_authority=state.ignored_authority,
        conflicting_records=state.conflicting_records,
        refusals={k.value: v for k, v in sorted(state.refusals.items())},
    )


def bridge_state(state: IncidentState, head_hash: str | None) -> BridgeState:
    """The bridge at `state.sequence`, whose ledger entry hash is `head_hash` (None
    before the first entry). Region ages are relative to the last event."""
    as_of = state.last_event_at
    last = last_directed_step(state)
    cap = MAX_BRIDGE_DIRECTIVES
    return BridgeState(
        incident_id=state.incident_id,
        title=state.title,
        service=state.service,
        status=incident_status(state),
        opened=state.opened,
        closed=state.closed,
        on_hold=state.on_hold,
        sequence=state.sequence,
        ledger_head=LedgerHead(sequence=state.sequence, hash=head_hash) if head_hash else None,
        state_changed_at=state.state_changed_at,
        opened_at=state.opened_at,
        last_event_at=state.last_event_at,
        holder=ConnHolder(identity=state.holder.identity, team=state.holder.team)
        if state.holder
        else None,
        hold=hold_info(state),
        authority=authority_in_force(state),
        open_step=state.open_step,
        last_step=directive_item(last) if last else None,
        last_verdict=state.last_verdict,
        regions=region_health(state, as_of) if as_of else (),
        control_plane=control_plane(state),
        pending_directives=by_sequence(state.pending_directives(), cap),
        blocked_directives=by_sequence(state.blocked_directives(), cap),
        partial_changes=by_sequence(state.unverified_changes(), cap),
        pending_approvals=pending_approvals(state, cap),
        takeover_requested_to=state.takeover_requested_to,
        last_packet=packet_reference(state),
        counts=bridge_counts(state),
    )


def bridge_summary(state: IncidentState) -> BridgeSummary:
    """The bridge in one line (incident lists; the timeline's bridge before and after
    each instruction)."""
    unverified = [d.correlation_id for d in state.unverified_changes()]
    return BridgeSummary(
        incident_id=state.incident_id,
        title=state.title,
        service=state.service,
        status=incident_status(state),
        sequence=state.sequence,
        holder=state.holder.identity if state.holder else None,
        on_hold=state.on_hold,
        hold_reason=state.hold.reason if state.hold else None,
        open_step=state.open_step,
        last_verdict=state.last_verdict,
        pending=len(state.pending_directives()),
        unverified_changes=tuple(unverified[-MAX_BRIDGE_DIRECTIVES:]),
        opened_at=state.opened_at,
        last_event_at=state.last_event_at,
    )
