"""Pure builders: incident state -> takeover packet -> Markdown, and the bridge
state summary kept in the read model. No I/O; the same inputs give the same
packet (and hash), which is what lets `conn replay` prove a published packet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from conn_core.bridge import (
    authority_in_force,
    by_sequence,
    control_plane,
    directive_item,
    hold_info,
    last_directed_step,
    pending_approvals,
    region_health,
)
from conn_core.bridge import bridge_state as core_bridge_state
from conn_core.chain import sha256_json
from conn_core.escaping import markdown_code as code
from conn_core.escaping import markdown_inline as md
from conn_core.escaping import markdown_quote
from conn_core.state import DirectiveStatus, IncidentState
from conn_schemas.packet import (
    MAX_PACKET_DIRECTIVES,
    DirectiveItem,
    LedgerHead,
    TakeoverPacket,
)

Trigger = Literal["hold", "handoff"]


def packet_id(incident_id: str, sequence: int, trigger: Trigger) -> str:
    """Deterministic: one packet per (incident, ledger position, trigger)."""
    return f"{incident_id}@{sequence}:{trigger}"


def packet_sha256(packet: TakeoverPacket) -> str:
    return sha256_json(packet.model_dump(mode="json"))


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
    return TakeoverPacket(
        packet_id=packet_id(state.incident_id, state.sequence, trigger),
        incident_id=state.incident_id,
        title=state.title,
        service=state.service,
        trigger=trigger,
        to_team=to_team,
        generated_at=generated_at,
        hold=hold_info(state),
        last_step=directive_item(last) if last else None,
        last_verdict=state.last_verdict,
        regions=region_health(state, generated_at),
        control_plane=control_plane(state),
        pending_directives=by_sequence(state.pending_directives(), MAX_PACKET_DIRECTIVES),
        blocked_directives=by_sequence(state.blocked_directives(), MAX_PACKET_DIRECTIVES),
        partial_changes=by_sequence(state.unverified_changes(), MAX_PACKET_DIRECTIVES),
        authority=authority_in_force(state),
        pending_approvals=pending_approvals(state),
        ledger_head=LedgerHead(sequence=state.sequence, hash=head_hash),
    )


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
    """The bridge as JSON: the contract's BridgeState (conn_core.bridge)."""
    return core_bridge_state(state, head_hash).model_dump(mode="json")


__all__ = [
    "DirectiveStatus",
    "authority_in_force",
    "bridge_state",
    "build_packet",
    "directive_item",
    "last_directed_step",
    "packet_id",
    "packet_sha256",
    "pending_approvals",
    "region_health",
    "render_markdown",
]
