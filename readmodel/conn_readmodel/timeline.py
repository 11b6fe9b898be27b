"""Pure post-incident report: a timeline linking every human instruction to its
tool actions, verification results and the bridge state at that moment, plus SLIs.

`build_timeline(events)` takes one incident's events in log order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conn_core.bridge import bridge_summary
from conn_core.fold import evolve
from conn_core.state import IncidentState
from conn_schemas.events import (
    ApprovalDeclined,
    ApprovalRecorded,
    AuthorityChangeApproved,
    AuthorityChangeProposed,
    AuthorityDeclared,
    DirectiveAccepted,
    DirectiveIssued,
    DirectiveRefused,
    Envelope,
    HoldDeclared,
    IncidentOpened,
    ResumeDirected,
    StateGathered,
    StepFailed,
    StepOutcomeUnknown,
    StepStarted,
    StepSucceeded,
    TakeoverAccepted,
    TakeoverPacketPublished,
    TakeoverRequested,
    VerificationSnapshot,
)
from conn_schemas.values import Verdict, describe_action

INSTRUCTIONS = (
    DirectiveIssued,
    HoldDeclared,
    ResumeDirected,
    TakeoverRequested,
    TakeoverAccepted,
    AuthorityDeclared,
    AuthorityChangeProposed,
    AuthorityChangeApproved,
)
ACTIONS = (
    ApprovalRecorded,  # the second person, listed under the directive they approved
    ApprovalDeclined,
    DirectiveAccepted,
    DirectiveRefused,
    StepStarted,
    StepSucceeded,
    StepFailed,
    StepOutcomeUnknown,
    StateGathered,
    TakeoverPacketPublished,
)


def _when(event: Envelope) -> str:
    return event.occurred_at.isoformat()


def _bridge(state: IncidentState) -> dict[str, Any]:
    """The bridge in one line: the contract's BridgeSummary (conn_core.bridge)."""
    return bridge_summary(state).model_dump(mode="json")


def _summary(event: Envelope) -> str:
    p: Any = event.payload
    if isinstance(event, DirectiveIssued | DirectiveAccepted | StepStarted | StepSucceeded):
        return describe_action(p.action)
    if isinstance(event, DirectiveRefused):
        return f"refused: {p.reason.value} ({p.detail})"
    if isinstance(event, StepFailed):
        return f"not executed: {p.error}" if p.not_started else f"failed: {p.error}"
    if isinstance(event, AuthorityDeclared):
        how = f", approved proposal {p.approval}" if p.approval else ""
        return (
            f"authority {p.authority.name}@{p.authority.version} "
            f"(sha256 {p.content_sha256[:12]}{how})"
        )
    if isinstance(event, AuthorityChangeProposed):
        return (
            f"authority change proposed ({p.proposal_id}): {p.authority.name}@"
            f"{p.authority.version}, widens: {'; '.join(p.widenings[:3])}"
        )
    if isinstance(event, AuthorityChangeApproved):
        return f"authority change {p.proposal_id} approved (sha256 {p.content_sha256[:12]})"
    if isinstance(event, ApprovalRecorded):
        return f"approved by {event.actor.id} (decision packet {p.packet_sha256[:12]})"
    if isinstance(event, ApprovalDeclined):
        return f"declined by {event.actor.id}: {p.reason}"
    if isinstance(event, StepOutcomeUnknown):
        return f"outcome unknown: {p.reason}"
    if isinstance(event, VerificationSnapshot):
        return f"verdict {p.verdict.value}: {p.detail}"
    if isinstance(event, HoldDeclared):
        return f"hold ({p.reason.value}) {p.detail}".strip()
    if isinstance(event, TakeoverRequested):
        return f"handoff to {p.to_team}"
    if isinstance(event, TakeoverAccepted):
        return f"takeover accepted by {p.team} (packet {p.packet_sha256[:12]})"
    if isinstance(event, TakeoverPacketPublished):
        return f"packet {p.trigger} {p.packet_sha256[:12]} at #{p.ledger_sequence}"
    if isinstance(event, StateGathered):
        return f"state gathered ({p.purpose})"
    return event.event_type


@dataclass
class Entry:
    sequence: int
    event_type: str
    occurred_at: str
    actor: str
    summary: str
    correlation_id: str | None
    bridge_before: dict[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at,
            "actor": self.actor,
            "summary": self.summary,
            "correlation_id": self.correlation_id,
            "bridge_before": self.bridge_before,
            "actions": self.actions,
            "verifications": self.verifications,
        }


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def build_timeline(events: list[Envelope]) -> dict[str, Any]:
    """The report as JSON-compatible data."""
    if not events:
        raise ValueError("no events for this incident")
    incident_id = events[0].incident_id
    state = IncidentState(incident_id=incident_id)
    entries: list[Entry] = []
    by_corr: dict[str, Entry] = {}
    by_event: dict[str, Entry] = {}
    opened_at: datetime | None = None
    first_action: datetime | None = None
    recovered_at: datetime | None = None
    refusals: dict[str, int] = {}
    unknown_steps: list[str] = []
    takeovers = {"requested": 0, "packets_published": 0, "accepted": 0}
    for event in events:
        before = _bridge(state)
        evolve(state, event)
        seq = state.sequence
        if isinstance(event, IncidentOpened) and opened_at is None:
            opened_at = event.occurred_at
        if isinstance(event, StepStarted) and first_action is None:
            first_action = event.occurred_at
        if isinstance(event, DirectiveRefused):
            key = event.payload.reason.value
            refusals[key] = refusals.get(key, 0) + 1
        if isinstance(event, StepOutcomeUnknown) and event.correlation_id:
            unknown_steps.append(event.correlation_id)
        if isinstance(event, TakeoverRequested):
            takeovers["requested"] += 1
        elif isinstance(event, TakeoverPacketPublished):
            takeovers["packets_published"] += 1
        elif isinstance(event, TakeoverAccepted):
            takeovers["accepted"] += 1
        if isinstance(event, VerificationSnapshot):
            if event.payload.verdict is Verdict.RECOVERED:
                recovered_at = recovered_at or event.occurred_at
            else:
                recovered_at = None  # recovery counts only if it stuck

        item = {
            "sequence": seq,
            "event_type": event.event_type,
            "occurred_at": _when(event),
            "actor": event.actor.id,
            "summary": _summary(event),
        }
        if isinstance(event, INSTRUCTIONS) and event.actor.kind == "human":
            entry = Entry(
                seq,
                event.event_type,
                _when(event),
                event.actor.id,
                _summary(event),
                event.correlation_id,
                before,
            )
            entries.append(entry)
            by_event[str(event.event_id)] = entry
            if event.correlation_id and isinstance(event, DirectiveIssued):
                by_corr[event.correlation_id] = entry
            continue
        target: Entry | None = None
        if isinstance(event, VerificationSnapshot):
            corr = event.payload.step_correlation_id or event.correlation_id
            target = by_corr.get(corr or "")
            if target is not None:
                target.verifications.append({**item, "bridge_after": _bridge(state)})
                continue
        elif isinstance(event, ACTIONS):
            target = by_corr.get(event.correlation_id or "") or by_event.get(
                event.causation_id or ""
            )
            if target is None and isinstance(event, TakeoverPacketPublished):
                handoffs = [e for e in entries if e.event_type == "TakeoverRequested"]
                target = handoffs[-1] if handoffs and event.payload.trigger == "handoff" else None
            if target is not None:
                target.actions.append(item)
                continue
    last = events[-1].occurred_at
    slis = {
        "opened_at": opened_at.isoformat() if opened_at else None,
        "time_to_first_action_seconds": _seconds(opened_at, first_action),
        "time_to_verified_recovery_seconds": _seconds(opened_at, recovered_at),
        "refusals_by_reason": dict(sorted(refusals.items())),
        "holds": state.holds_declared,
        "takeovers": takeovers,
        "steps_with_unknown_outcome": len(unknown_steps),
        "unknown_outcome_steps": unknown_steps,
        "duration_seconds": _seconds(opened_at, last),
    }
    return {
        "incident_id": incident_id,
        "title": state.title,
        "service": state.service,
        "closed": state.closed,
        "ledger_sequence": state.sequence,
        "instructions": [e.as_dict() for e in entries],
        "slis": slis,
    }


def _fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}s"


def render_timeline_markdown(report: dict[str, Any]) -> str:
    s = report["slis"]
    lines = [f"# Post-incident timeline: {report['title'] or report['incident_id']}", ""]
    lines.append(
        f"- Incident `{report['incident_id']}` ({report['service']}), ledger #{report['ledger_sequence']}"
    )
    lines.append(f"- Time to first action: {_fmt_s(s['time_to_first_action_seconds'])}")
    lines.append(f"- Time to verified recovery: {_fmt_s(s['time_to_verified_recovery_seconds'])}")
    refusals = ", ".join(f"{k} {v}" for k, v in s["refusals_by_reason"].items()) or "none"
    lines.append(f"- Refusals: {refusals}")
    lines.append(f"- Holds: {s['holds']}")
    t = s["takeovers"]
    lines.append(
        f"- Takeovers: {t['requested']} requested, {t['packets_published']} packets, "
        f"{t['accepted']} accepted"
    )
    lines.append(f"- Steps with unknown outcome: {s['steps_with_unknown_outcome']}")
    lines.append("")
    lines.append("## Instructions")
    for e in report["instructions"]:
        lines.append("")
        lines.append(f"### #{e['sequence']} {e['event_type']} by {e['actor']}")
        lines.append(f"{e['occurred_at']} — {e['summary']}")
        b = e["bridge_before"]
        hold = f"on hold ({b['hold_reason']})" if b["on_hold"] else "not on hold"
        lines.append(
            f"- Bridge before: #{b['sequence']}, conn: {b['holder']}, {hold}, "
            f"last verdict: {b['last_verdict'] or 'none'}"
        )
        for a in e["actions"]:
            lines.append(f"- → #{a['sequence']} {a['event_type']}: {a['summary']}")
        for v in e["verifications"]:
            mark = "✔" if v["summary"].startswith("verdict recovered") else "✖"
            lines.append(f"- {mark} #{v['sequence']} {v['event_type']}: {v['summary']}")
        if not e["actions"] and not e["verifications"]:
            lines.append("- (no tool action)")
    return "\n".join(lines) + "\n"
