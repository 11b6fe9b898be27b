"""Pure builders: incident state -> takeover packet -> Markdown, and the bridge
state summary kept in the read model. No I/O; the same inputs give the same
packet (and hash), which is what lets `conn replay` prove a published packet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from conn_core import approvals
from conn_core.chain import sha256_json
from conn_core.escaping import markdown_code as code
from conn_core.escaping import markdown_inline as md
from conn_core.escaping import markdown_quote
from conn_core.redaction import redact
from conn_core.state import DirectiveRecord, DirectiveStatus, IncidentState
from conn_schemas.packet import (
    MAX_PACKET_DIRECTIVES,
    AuthorityInForce,
    ControlPlaneItem,
    DirectiveItem,
    HoldInfo,
    LedgerHead,
    PendingApprovalItem,
    RegionHealth,
    TakeoverPacket,
)
from conn_schemas.values import (
    MAX_DETAIL,
    action_regions,
    action_target,
    clean_text,
    describe_action,
)

Trigger = Literal["hold", "handoff"]


def packet_id(incident_id: str, sequence: int, trigger: Trigger) -> str:
    """Deterministic: one packet per (incident, ledger position, trigger)."""
    return f"{incident_id}@{sequence}:{trigger}"


def packet_sha256(packet: TakeoverPacket) -> str:
    return sha256_json(packet.model_dump(mode="json"))


def directive_item(record: DirectiveRecord) -> DirectiveItem:
    return DirectiveItem(
        correlation_id=record.correlation_id,
        action=record.action,
        description=clean_text(describe_action(record.action), MAX_DETAIL),
        target=action_target(record.action),
        regions=action_regions(record.action),
        consequential=record.consequential,
        issued_by=record.actor_id,
        issued_sequence=record.issued_sequence,
        status=record.status.value,
        verdict=record.verdict,
        refusal=record.refusal,
        refusal_detail=clean_text(redact(record.refusal_detail), MAX_DETAIL, multiline=True),
        started_at=record.started_at,
        finished_at=record.finished_at,
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
    out = []
    for region in region_names(state):
        reading = state.last_readings.get(region)
        checked = state.last_verification.get(region)
        out.append(
            RegionHealth(
                region=region,
                error_rate=reading.error_rate if reading else None,
                queue_depth=reading.queue_depth if reading else None,
                request_rate=reading.request_rate if reading else None,
                observed_at=reading.observed_at if reading else None,
                age_seconds=round(reading.age_seconds(as_of), 3) if reading else None,
                healthy=checked.healthy if checked else None,
                fresh=checked.fresh if checked else None,
                verified_at=state.last_verification_at.get(region),
            )
        )
    return tuple(out)


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


def _by_sequence(
    records: list[DirectiveRecord], limit: int | None = None
) -> tuple[DirectiveItem, ...]:
    """Directive items in ledger order; with `limit`, only the most recent ones."""
    ordered = sorted(records, key=lambda d: d.issued_sequence)
    if limit is not None:
        ordered = ordered[-limit:]
    return tuple(directive_item(r) for r in ordered)


def build_packet(
    state: IncidentState,
    *,
    head_hash: str,
    trigger: Trigger,
    to_team: str | None,
    generated_at: datetime,
) -> TakeoverPacket:
    """The packet for `state` (folded up to and including ledger position
    `state.sequence`, whose entry hash is `head_hash`)."""
    last = last_directed_step(state)
    hold = state.hold
    return TakeoverPacket(
        packet_id=packet_id(state.incident_id, state.sequence, trigger),
        incident_id=state.incident_id,
        title=state.title,
        service=state.service,
        trigger=trigger,
        to_team=to_team,
        generated_at=generated_at,
        hold=HoldInfo(
            reason=hold.reason,
            detail=clean_text(redact(hold.detail), MAX_DETAIL, multiline=True),
            since_sequence=hold.since_sequence,
            correlation_id=hold.correlation_id,
        )
        if hold
        else None,
        last_step=directive_item(last) if last else None,
        last_verdict=state.last_verdict,
        regions=region_health(state, generated_at),
        control_plane=tuple(
            ControlPlaneItem(
                subject=c.subject, expected=c.expected, observed=c.observed, matches=c.matches
            )
            for c in state.last_control_plane
        ),
        pending_directives=_by_sequence(state.pending_directives(), MAX_PACKET_DIRECTIVES),
        blocked_directives=_by_sequence(state.blocked_directives(), MAX_PACKET_DIRECTIVES),
        partial_changes=_by_sequence(state.unverified_changes(), MAX_PACKET_DIRECTIVES),
        authority=authority_in_force(state),
        pending_approvals=pending_approvals(state),
        ledger_head=LedgerHead(sequence=state.sequence, hash=head_hash),
    )


def pending_approvals(state: IncidentState) -> tuple[PendingApprovalItem, ...]:
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
    return tuple(out)


# --- Markdown (readable on a phone: short lines, no wide tables) -----------------------


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _item_line(item: DirectiveItem) -> str:
    extra = ""
    if item.verdict is not None:
        extra += f", verified: **{item.verdict.value}**"
    if item.refusal is not None:
        extra += f", refused: {item.refusal.value} ({md(item.refusal_detail)})"
    return (
        f"- {code(item.description)} — **{md(item.status)}**{extra}  \n"
        f"  by {md(item.issued_by)} at #{item.issued_sequence}, id {code(item.correlation_id)}"
    )


def render_markdown(packet: TakeoverPacket, sha256: str | None = None) -> str:
    """The packet for people. Every user-supplied string is escaped for Markdown
    (`conn_core.escaping`): a title or detail cannot add a heading, a holder, a link or
    raw HTML."""
    p = packet
    lines = [f"# Takeover: {md(p.title)}", ""]
    lines.append(f"- Incident: {code(p.incident_id)} ({md(p.service)})")
    lines.append(
        f"- Trigger: **{p.trigger}**" + (f" → team **{md(p.to_team)}**" if p.to_team else "")
    )
    lines.append(f"- As of: {p.generated_at.isoformat()}")
    lines.append(f"- Ledger head: #{p.ledger_head.sequence} {code(p.ledger_head.hash)}")
    if sha256:
        lines.append(f"- Packet sha256: {code(sha256)} (accept with this hash)")
    lines.append("")
    lines.append("## Hold")
    if p.hold:
        lines.append(f"**ON HOLD** since #{p.hold.since_sequence}: {p.hold.reason.value}")
        if p.hold.detail:
            lines.extend(markdown_quote(p.hold.detail))
    else:
        lines.append("Not on hold.")
    lines.append("")
    lines.append("## Last directed step")
    lines.append(_item_line(p.last_step) if p.last_step else "None.")
    lines.append("")
    lines.append(
        "## Health per region"
        + (f" (last verdict: {p.last_verdict.value})" if p.last_verdict else "")
    )
    if not p.regions:
        lines.append("No readings.")
    for r in p.regions:
        if r.observed_at is None:
            lines.append(f"- **{md(r.region)}**: no reading")
            continue
        state = {True: "healthy", False: "UNHEALTHY", None: "unverified"}[r.healthy]
        stale = " STALE" if r.fresh is False else ""
        lines.append(
            f"- **{md(r.region)}**: {state}{stale}, errors {_num(r.error_rate, '.2%')}, "
            f"queue {_num(r.queue_depth, '.0f')}, age {_num(r.age_seconds, '.0f')}s"
        )
    if p.control_plane:
        lines.append("")
        lines.append("## Control plane (last verification)")
        for c in p.control_plane:
            mark = "ok" if c.matches else "MISMATCH"
            lines.append(
                f"- {md(c.subject)}: expected {md(c.expected)}, observed {md(c.observed)} ({mark})"
            )
    for title, items in (
        ("Partially completed changes (started, unverified)", p.partial_changes),
        ("Pending directives", p.pending_directives),
        ("Blocked directives", p.blocked_directives),
    ):
        lines.append("")
        lines.append(f"## {title}")
        lines.extend(_item_line(i) for i in items) if items else lines.append("None.")
    if p.pending_approvals:
        lines.append("")
        lines.append("## Waiting for approval (two-person rule)")
        for w in p.pending_approvals:
            got = ", ".join(w.approved_by) or "nobody yet"
            lines.append(
                f"- `{w.description}` by {w.issued_by}: {len(w.approved_by)} of {w.required} "
                f"approvals ({got}); expires {w.expires_at.isoformat()}  \n"
                f"  id `{w.correlation_id}`, decision packet `{w.decision_packet_sha256}`"
            )
    lines.append("")
    lines.append("## Authority in force")
    if p.authority:
        a = p.authority
        lines.append(f"- {md(a.name)} @ {md(a.version)}")
        lines.append(f"- sha256 {code(a.sha256 or 'none')}")
        lines.append(
            f"- Conn held by **{md(a.holder)}**"
            + (f" ({md(a.holder_team)})" if a.holder_team else "")
        )
        if a.takeover_teams:
            lines.append(f"- May take over: {', '.join(md(t) for t in a.takeover_teams)}")
    else:
        lines.append("None declared.")
    lines.append("")
    lines.append(
        "Nothing is acknowledged implicitly: accept explicitly (TakeoverAccepted with the "
        "packet sha256)."
    )
    return "\n".join(lines) + "\n"


# --- bridge state (read model `incidents.bridge`) ---------------------------------------


def bridge_state(state: IncidentState, head_hash: str) -> dict[str, Any]:
    """The bridge as JSON: holder, current step and status, health per region (ages
    relative to the last event), pending/blocked directives, partial changes, hold."""
    as_of = state.last_event_at
    last = last_directed_step(state)
    open_step = state.directives.get(state.open_step) if state.open_step else None
    holder = state.holder
    return {
        "incident_id": state.incident_id,
        "title": state.title,
        "service": state.service,
        "opened": state.opened,
        "closed": state.closed,
        "sequence": state.sequence,
        "head_hash": head_hash,
        "state_changed_at": state.state_changed_at,
        "holder": {"identity": holder.identity, "team": holder.team} if holder else None,
        "authority": (a.model_dump(mode="json") if (a := authority_in_force(state)) else None),
        "current_step": directive_item(last).model_dump(mode="json") if last else None,
        "open_step": open_step.correlation_id if open_step else None,
        "last_verdict": state.last_verdict.value if state.last_verdict else None,
        "regions": [r.model_dump(mode="json") for r in region_health(state, as_of)]
        if as_of
        else [],
        "pending_directives": [
            i.model_dump(mode="json") for i in _by_sequence(state.pending_directives())
        ],
        "blocked_directives": [
            i.model_dump(mode="json") for i in _by_sequence(state.blocked_directives())
        ],
        "partial_changes": [
            i.model_dump(mode="json") for i in _by_sequence(state.unverified_changes())
        ],
        "hold": {
            "reason": state.hold.reason.value,
            "detail": state.hold.detail,
            "since_sequence": state.hold.since_sequence,
            "correlation_id": state.hold.correlation_id,
        }
        if state.hold
        else None,
        "takeover_requested_to": state.takeover_requested_to,
        "last_packet": {
            "sha256": state.last_packet.sha256,
            "to_team": state.last_packet.to_team,
            "trigger": state.last_packet.trigger,
            "sequence": state.last_packet.sequence,
            "describes_sequence": state.last_packet.basis,
            "current": state.packet_changed_at <= state.last_packet.basis,
        }
        if state.last_packet
        else None,
        "counts": {
            "directives": len(state.directives),
            "consequential_steps": state.consequential_steps,
            "holds": state.holds_declared,
            "takeovers_accepted": state.takeovers_accepted,
            "ignored_controls": state.ignored_controls,
            "ignored_authority": state.ignored_authority,
            "conflicting_records": state.conflicting_records,
            "refusals": {k.value: v for k, v in sorted(state.refusals.items())},
        },
    }


__all__ = [
    "DirectiveStatus",
    "bridge_state",
    "build_packet",
    "packet_id",
    "packet_sha256",
    "render_markdown",
]
