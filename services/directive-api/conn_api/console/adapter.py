"""The console's one window onto what the API already holds.

Everything the pages show is built here, from the API's own fold of the log
(`Runtime.view`: `IncidentState`, the ledger entries, the kill switch) and, for the
packet's content, from the same `packet_for` the `/v1/.../packet` route uses. The
templates see only the frozen view models below, never `IncidentState` or an event.

When the API gets one typed view of the bridge state (the renovation issue), this module
is the only part of the console that changes: `BridgeReader` then reads those views
instead of the fold.

Which controls a person is shown is decided by the core's own `check_control` on the
control event the person would send (nothing is re-implemented here); the API route
still decides for real when the form is posted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from conn_api import fleet as fleet_api
from conn_api.auth import Identity
from conn_api.console.render import fmt_pct
from conn_api.disclosure import privileged
from conn_api.packets import packet_for
from conn_api.runtime import PRODUCER, Runtime
from conn_api.view import LedgerEntry
from conn_core import approvals, fleet
from conn_core.chain import sha256_json
from conn_core.redaction import scrub
from conn_core.rules import check_control
from conn_core.state import ControlState, DirectiveRecord, IncidentState
from conn_schemas.approvals import ApprovalDeclinedPayload, ApprovalRecordedPayload
from conn_schemas.events import (
    AlertReceived,
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
    HoldDeclaredPayload,
    IncidentClosed,
    IncidentOpened,
    IncidentRecordUpdated,
    KillSwitchEngaged,
    KillSwitchReleased,
    ResumeDirected,
    ResumeDirectedPayload,
    StateGathered,
    StepFailed,
    StepOutcomeUnknown,
    StepStarted,
    StepSucceeded,
    TakeoverAccepted,
    TakeoverAcceptedPayload,
    TakeoverPacketPublished,
    TakeoverRequested,
    TakeoverRequestedPayload,
    VerificationSnapshot,
    new_event,
)
from conn_schemas.packet import TakeoverPacket
from conn_schemas.values import HoldReason, Role, describe_action

SPARK_POINTS = 40
MAX_TEXT = 2000


def _shown(text: str, full: bool) -> str:
    """Free text (errors, reasons, details, conflicts) as this reader may see it: whole
    for the roles that act on it, scrubbed for everyone else (invariant 10, the API's
    `conn_api.disclosure` rule on the same fields)."""
    return text if full else scrub(text, limit=MAX_TEXT)


# --- view models --------------------------------------------------------------------------


@dataclass(frozen=True)
class Badge:
    """A state shown as text (and, in CSS, a colour keyed by `code`)."""

    code: str
    text: str


@dataclass(frozen=True)
class IncidentRow:
    incident_id: str
    title: str
    service: str
    severity: str
    status: str
    """open | held | handoff | closed (the primary state, shown as `badges[0]`)."""
    badges: tuple[Badge, ...]
    holder: str | None
    holder_team: str | None
    last_verdict: str | None
    sequence: int
    last_event_at: datetime | None


@dataclass(frozen=True)
class LedgerRow:
    sequence: int
    hash: str
    event_type: str
    kind: str
    """A category for the eye: directive | step | verify | refusal | control | packet | info."""
    actor: str
    occurred_at: datetime
    summary: str
    correlation_id: str | None


@dataclass(frozen=True)
class RegionPanel:
    region: str
    label: Badge
    error_rate: float | None
    queue_depth: float | None
    request_rate: float | None
    observed_at: datetime | None
    age_seconds: float | None
    verified_at: datetime | None
    error_series: tuple[float, ...]
    queue_series: tuple[float, ...]


@dataclass(frozen=True)
class StepView:
    correlation_id: str
    summary: str
    status: str
    verdict: str | None
    actor: str
    issued_sequence: int
    consequential: bool
    refusal: str | None
    refusal_detail: str


@dataclass(frozen=True)
class ProposalView:
    """A wider boundary the holder proposed, not in force until a second person approves."""

    proposal_id: str
    name: str
    version: str
    sha256: str
    proposed_by: str
    sequence: int
    widenings: tuple[str, ...]
    approved_by: str | None


@dataclass(frozen=True)
class ApprovalView:
    """A directive waiting for approvers (two-person rule), with its decision packet's
    hash; `may_approve` / `may_decline`: what the core's `check_vote` would say to this
    person now (the API route still decides for real)."""

    correlation_id: str
    status: str
    summary: str
    issued_by: str
    risk: str
    risk_notes: tuple[str, ...]
    preconditions: tuple[str, ...]
    undo: str | None
    authority: str
    expires_at: datetime
    required: int
    counted: int
    votes: tuple[str, ...]
    packet_sha256: str
    may_approve: bool
    may_decline: bool
    packet_json: str = ""
    """The whole decision packet (evidence, blast radius, verification criteria...) as the
    API lists it: what the hash covers."""


@dataclass(frozen=True)
class AuthorityView:
    name: str
    version: str
    sha256: str | None
    source_file: str | None
    regions: tuple[str, ...]
    takeover_teams: tuple[str, ...]
    proposals: tuple[ProposalView, ...] = ()
    """Open widening proposals (not applied, still about the boundary in force and the
    same holder): shown, never in force."""


@dataclass(frozen=True)
class RefusalView:
    sequence: int
    reason: str
    detail: str
    refused_by: str
    actor: str
    action: str | None


@dataclass(frozen=True)
class HoldView:
    reason: str
    detail: str
    since_sequence: int


@dataclass(frozen=True)
class PacketRefView:
    sha256: str
    to_team: str | None
    trigger: str
    sequence: int


@dataclass(frozen=True)
class KillSwitchView:
    engaged: bool
    reason: str
    changed_by: str | None
    changed_at: datetime | None


@dataclass(frozen=True)
class Controls:
    """What this person may do here, by role and by the core's rules. Empty for observers."""

    hold: bool = False
    resume: bool = False
    handoff_teams: tuple[str, ...] = ()
    accept: PacketRefView | None = None
    accept_team: str | None = None
    kill_switch: str | None = None
    """"engage" / "release" for an admin, else None."""

    @property
    def any(self) -> bool:
        return bool(
            self.hold or self.resume or self.handoff_teams or self.accept or self.kill_switch
        )


@dataclass(frozen=True)
class IncidentPage:
    row: IncidentRow
    opened: bool
    hold: HoldView | None
    current_step: StepView | None
    open_step: str | None
    pending: tuple[StepView, ...]
    regions: tuple[RegionPanel, ...]
    authority: AuthorityView | None
    refusals: tuple[RefusalView, ...]
    packet: PacketRefView | None
    takeover_requested_to: str | None
    kill_switch: KillSwitchView
    head_sequence: int
    head_hash: str | None
    ledger: tuple[LedgerRow, ...]
    ledger_hidden: int
    controls: Controls
    now: datetime
    approvals: tuple[ApprovalView, ...] = ()


@dataclass(frozen=True)
class PacketPage:
    incident_id: str
    title: str
    ref: PacketRefView
    packet: TakeoverPacket | None
    """The content from the packager's read model; None while it is not there."""
    content_matches: bool | None
    """Does the content hash to the published sha256 (checked here)? None: no content."""
    markdown: str | None
    ledger_sequence: int
    ledger_hash: str
    source: str
    controls: Controls
    kill_switch: KillSwitchView
    current: bool = True
    freshness: str = "current"
    """`packet_freshness`: "current", "due" (the incident changed since: a newer packet is
    due, acceptance is refused) or "superseded"."""
    accepted_by: str | None = None
    """"dana (database-platform) at #35" once a team accepted this very packet."""
    errors: list[str] = field(default_factory=list)


# --- building them ------------------------------------------------------------------------


def _opened(ledger: Sequence[LedgerEntry]) -> IncidentOpened | None:
    for entry in ledger:  # IncidentOpened is (nearly always) the first entry
        if isinstance(entry.event, IncidentOpened):
            return entry.event
    return None


def _authority_source(ledger: Sequence[LedgerEntry]) -> str | None:
    for entry in reversed(ledger):
        if isinstance(entry.event, AuthorityDeclared):
            return str(entry.event.payload.source_file)
    return None


def badges(state: IncidentState) -> tuple[str, tuple[Badge, ...]]:
    out: list[Badge] = []
    if state.closed:
        status = "closed"
        out.append(Badge("closed", "Closed"))
    elif state.takeover_requested_to:
        status = "handoff"
        out.append(Badge("handoff", f"Handoff requested to {state.takeover_requested_to}"))
    elif state.hold is not None:
        status = "held"
    else:
        status = "open"
        out.append(Badge("open", "Open"))
    if state.hold is not None and not state.closed:
        out.insert(
            0 if status == "held" else 1,
            Badge("held", f"On hold ({state.hold.reason.value})"),
        )
    if state.takeovers_accepted and state.holder is not None:
        out.append(
            Badge("handed-off", f"Handed off to {state.holder.team or state.holder.identity}")
        )
    return status, tuple(out)


def incident_row(state: IncidentState, ledger: Sequence[LedgerEntry]) -> IncidentRow:
    opened = _opened(ledger)
    status, shown = badges(state)
    return IncidentRow(
        incident_id=state.incident_id,
        title=state.title,
        service=state.service,
        severity=opened.payload.severity if opened else "unknown",
        status=status,
        badges=shown,
        holder=state.holder.identity if state.holder else None,
        holder_team=state.holder.team if state.holder else None,
        last_verdict=state.last_verdict.value if state.last_verdict else None,
        sequence=state.sequence,
        last_event_at=state.last_event_at,
    )


def summarize(event: Envelope, full: bool = True) -> tuple[str, str]:
    """(kind, one plain line) for a ledger entry. Plain text: the template escapes it.
    `full=False`: free texts (errors, reasons, details) scrubbed, as the API shows them
    to observers."""

    def t(text: str) -> str:
        return _shown(text, full)

    if isinstance(event, IncidentOpened):
        opened = event.payload
        return "info", f"“{opened.title}” — service {opened.service}, {opened.severity}"
    if isinstance(event, AuthorityDeclared):
        a = event.payload.authority
        return "control", (
            f"{a.name}@{a.version} (sha256 {event.payload.content_sha256[:12]}…), "
            f"conn held by {a.holder.identity}"
        )
    if isinstance(event, AuthorityChangeProposed):
        proposed = event.payload
        return "control", (
            f"proposed {proposed.authority.name}@{proposed.authority.version} "
            f"(sha256 {proposed.content_sha256[:12]}…), "
            f"wider: {'; '.join(proposed.widenings)} — not in force until a second person approves"
        )
    if isinstance(event, AuthorityChangeApproved):
        approved = event.payload
        return "control", (
            f"approved proposal {approved.proposal_id} (sha256 {approved.content_sha256[:12]}…)"
            + (f" — {t(approved.detail)}" if approved.detail else "")
        )
    if isinstance(event, DirectiveIssued):
        text = describe_action(event.payload.action)
        if event.payload.rationale:
            text += f" — “{event.payload.rationale}”"
        return "directive", text
    if isinstance(event, DirectiveAccepted):
        return "directive", describe_action(event.payload.action)
    if isinstance(event, DirectiveRefused):
        refused = event.payload
        return (
            "refusal",
            f"refused by {refused.refused_by}: {refused.reason.value} — {t(refused.detail)}",
        )
    if isinstance(event, StateGathered):
        gathered = event.payload
        o = gathered.observation
        text = (
            f"{gathered.purpose}: {len(o.flags)} flag rules, {len(o.pools)} pools, "
            f"{len(o.tiers)} tiers, {len(o.metrics)} regions"
        )
        if gathered.conflicts:
            text += " — conflicts: " + "; ".join(t(c) for c in gathered.conflicts)
        return "step", text
    if isinstance(event, StepStarted):
        return "step", describe_action(event.payload.action)
    if isinstance(event, StepSucceeded):
        return "step", event.payload.summary
    if isinstance(event, StepFailed):
        return "refusal", f"{describe_action(event.payload.action)} — {t(event.payload.error)}"
    if isinstance(event, StepOutcomeUnknown):
        return "refusal", f"{describe_action(event.payload.action)} — {t(event.payload.reason)}"
    if isinstance(event, VerificationSnapshot):
        snapshot = event.payload
        parts = []
        for r in snapshot.regions:
            if r.readings:
                last = r.readings[-1]
                queue = "n/a" if last.queue_depth is None else f"{last.queue_depth:.0f}"
                parts.append(
                    f"{r.region} {'healthy' if r.healthy else 'unhealthy'}"
                    f"{'' if r.fresh else ' (stale)'}, errors {fmt_pct(last.error_rate)}, "
                    f"queue {queue}"
                )
            else:
                parts.append(f"{r.region}: no reading")
        return "verify", f"verdict {snapshot.verdict.value} — " + "; ".join(parts)
    if isinstance(event, HoldDeclared):
        hold = event.payload
        return "control", hold.reason.value + (f" — {t(hold.detail)}" if hold.detail else "")
    if isinstance(event, ResumeDirected):
        return "control", t(event.payload.detail) or "hold lifted"
    if isinstance(event, TakeoverRequested):
        takeover = event.payload
        return "control", f"to {takeover.to_team}" + (
            f" — {t(takeover.detail)}" if takeover.detail else ""
        )
    if isinstance(event, TakeoverPacketPublished):
        packet = event.payload
        return "packet", (
            f"sha256 {packet.packet_sha256[:12]}… for {packet.to_team or 'any team'} ({packet.trigger})"
        )
    if isinstance(event, TakeoverAccepted):
        accepted = event.payload
        return "control", f"team {accepted.team} accepted packet {accepted.packet_sha256[:12]}…"
    if isinstance(event, IncidentRecordUpdated):
        update = event.payload
        return "info", update.summary + ("" if update.delivered else " (not delivered)")
    if isinstance(event, AlertReceived):
        alert = event.payload
        return "info", f"{alert.source} {alert.status}: {alert.summary or alert.fingerprint}"
    if isinstance(event, IncidentClosed):
        return "control", event.payload.resolution
    if isinstance(event, KillSwitchEngaged | KillSwitchReleased):
        return "control", t(event.payload.reason)
    if isinstance(event, ApprovalRecorded):
        approval = event.payload
        return "control", (
            f"approved decision packet {approval.packet_sha256[:12]}… (two-person rule)"
            + (f" — {t(approval.detail)}" if approval.detail else "")
        )
    if isinstance(event, ApprovalDeclined):
        declined = event.payload
        return (
            "refusal",
            f"declined decision packet {declined.packet_sha256[:12]}… — {t(declined.reason)}",
        )
    return "info", event.event_type


def ledger_row(entry: LedgerEntry, full: bool = True) -> LedgerRow:
    kind, text = summarize(entry.event, full)
    e = entry.event
    return LedgerRow(
        sequence=entry.sequence,
        hash=entry.hash,
        event_type=e.event_type,
        kind=kind,
        actor=e.actor.id,
        occurred_at=e.occurred_at,
        summary=text,
        correlation_id=e.correlation_id,
    )


def step_view(d: DirectiveRecord, full: bool = True) -> StepView:
    return StepView(
        correlation_id=d.correlation_id,
        summary=describe_action(d.action),
        status=d.status.value,
        verdict=d.verdict.value if d.verdict else None,
        actor=d.actor_id,
        issued_sequence=d.issued_sequence,
        consequential=d.consequential,
        refusal=d.refusal.value if d.refusal else None,
        refusal_detail=_shown(d.refusal_detail, full),
    )


def current_step(state: IncidentState) -> DirectiveRecord | None:
    """The open consequential step, else the last one, else the last directive."""
    for cid in (state.open_step, state.last_step):
        if cid is not None and cid in state.directives:
            return state.directives[cid]
    if not state.directives:
        return None
    return max(state.directives.values(), key=lambda d: d.issued_sequence)


def _series(ledger: Iterable[LedgerEntry]) -> dict[str, tuple[list[float], list[float]]]:
    """Per region: error rates and queue depths of every reading in the snapshots."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    seen: set[tuple[str, datetime]] = set()
    for entry in ledger:
        if not isinstance(entry.event, VerificationSnapshot):
            continue
        for region in entry.event.payload.regions:
            errors, queues = out.setdefault(region.region, ([], []))
            for reading in region.readings:
                key = (region.region, reading.observed_at)
                if key in seen:
                    continue
                seen.add(key)
                # no data is no point on the line (never a zero)
                if reading.error_rate is not None:
                    errors.append(reading.error_rate)
                if reading.queue_depth is not None:
                    queues.append(reading.queue_depth)
    return out


def region_label(healthy: bool | None, fresh: bool | None, has_reading: bool) -> Badge:
    if not has_reading:
        return Badge("nodata", "No data")
    if fresh is False:
        return Badge("stale", "Stale reading")
    if healthy is True:
        return Badge("healthy", "Healthy")
    if healthy is False:
        return Badge("unhealthy", "Unhealthy")
    return Badge("unverified", "Not verified yet")


def regions(
    state: IncidentState, ledger: Sequence[LedgerEntry], now: datetime
) -> tuple[RegionPanel, ...]:
    names: list[str] = list(state.authority.regions) if state.authority else []
    for name in sorted({*state.last_readings, *state.last_verification}):
        if name not in names:
            names.append(name)
    series = _series(ledger)
    out = []
    for name in names:
        reading = state.last_readings.get(name)
        checked = state.last_verification.get(name)
        errors, queues = series.get(name, ([], []))
        out.append(
            RegionPanel(
                region=name,
                label=region_label(
                    checked.healthy if checked else None,
                    checked.fresh if checked else None,
                    reading is not None,
                ),
                error_rate=reading.error_rate if reading else None,
                queue_depth=reading.queue_depth if reading else None,
                request_rate=reading.request_rate if reading else None,
                observed_at=reading.observed_at if reading else None,
                age_seconds=reading.age_seconds(now) if reading else None,
                verified_at=state.last_verification_at.get(name),
                error_series=tuple(errors[-SPARK_POINTS:]),
                queue_series=tuple(queues[-SPARK_POINTS:]),
            )
        )
    return tuple(out)


def refusals(ledger: Iterable[LedgerEntry], full: bool = True) -> tuple[RefusalView, ...]:
    out = []
    for entry in ledger:
        e = entry.event
        if isinstance(e, DirectiveRefused):
            out.append(
                RefusalView(
                    sequence=entry.sequence,
                    reason=e.payload.reason.value,
                    detail=_shown(e.payload.detail, full),
                    refused_by=e.payload.refused_by,
                    actor=e.actor.id,
                    action=describe_action(e.payload.action) if e.payload.action else None,
                )
            )
    return tuple(out)


def open_proposals(state: IncidentState) -> tuple[ProposalView, ...]:
    """Widening proposals that may still be approved (the API's rule: not applied, about
    the boundary in force, made by the current holder)."""
    holder = state.holder.identity if state.holder else None
    return tuple(
        ProposalView(
            proposal_id=p.proposal_id,
            name=p.authority.name,
            version=p.authority.version,
            sha256=p.content_sha256,
            proposed_by=p.proposer,
            sequence=p.proposed_sequence,
            widenings=tuple(p.widenings),
            approved_by=p.approved_by,
        )
        for p in state.authority_proposals.values()
        if not p.applied and p.base_sha256 == state.authority_sha256 and p.proposer == holder
    )


def approval_views(who: Identity, state: IncidentState, now: datetime) -> tuple[ApprovalView, ...]:
    """Directives waiting for approvers (the API's `GET .../approvals` items), and whether
    `who` may approve or decline each one: the core's `check_vote` on the vote they would
    send, naming the decision packet shown. Service identities may do neither."""
    out = []
    for item in approvals.pending(state, now):
        cid = item.correlation_id
        may_approve = may_decline = False
        if item.status == "awaiting" and who.kind == "human":
            actor = who.actor()
            approve = new_event(
                ApprovalRecorded,
                incident_id=state.incident_id,
                payload=ApprovalRecordedPayload(packet_sha256=item.packet_sha256),
                actor=actor,
                producer=PRODUCER,
                correlation_id=cid,
                clock=lambda: now,
            )
            decline = new_event(
                ApprovalDeclined,
                incident_id=state.incident_id,
                payload=ApprovalDeclinedPayload(packet_sha256=item.packet_sha256, reason="-"),
                actor=actor,
                producer=PRODUCER,
                correlation_id=cid,
                clock=lambda: now,
            )
            may_approve = approvals.check_vote(state, approve) is None
            may_decline = approvals.check_vote(state, decline) is None
        p = item.packet
        out.append(
            ApprovalView(
                correlation_id=cid,
                status=item.status,
                summary=p.summary,
                issued_by=p.issued_by,
                risk=p.risk,
                risk_notes=tuple(p.risk_notes),
                preconditions=tuple(p.preconditions),
                undo=p.undo,
                authority=p.authority,
                expires_at=p.expires_at,
                required=item.required,
                counted=item.counted,
                votes=tuple(
                    f"{v.approver} {v.decision}"
                    + ("" if v.counted else " (not counted)")
                    + (f": {v.note}" if v.note else "")
                    for v in item.votes
                ),
                packet_sha256=item.packet_sha256,
                may_approve=may_approve,
                may_decline=may_decline,
                packet_json=json.dumps(p.model_dump(mode="json"), indent=2, sort_keys=True),
            )
        )
    return tuple(out)


def packet_freshness(state: IncidentState, sha256: str) -> str:
    """The API's rule for the packet `sha256` (`/v1/.../packet` "current"):
    "current" — the latest packet, and the incident has not changed since the position it
    describes; "due" — the latest, but the incident changed since and a takeover is
    pending, so a newer packet is due (accepting this one is refused as stale);
    "superseded" — a newer packet exists, or the incident moved on with no takeover
    pending."""
    latest = state.last_packet
    if latest is None or latest.sha256 != sha256:
        return "superseded"
    if state.packet_changed_at <= latest.basis:
        return "current"
    pending = not state.closed and (
        state.hold is not None or state.takeover_requested_to is not None
    )
    return "due" if pending else "superseded"


def packet_ref(state: IncidentState) -> PacketRefView | None:
    p = state.last_packet
    if p is None:
        return None
    return PacketRefView(sha256=p.sha256, to_team=p.to_team, trigger=p.trigger, sequence=p.sequence)


def kill_switch(control: ControlState) -> KillSwitchView:
    return KillSwitchView(
        engaged=control.kill_switch,
        reason=control.reason,
        changed_by=control.changed_by,
        changed_at=control.changed_at,
    )


def accepted_packets(ledger: Iterable[LedgerEntry]) -> set[str]:
    """Hashes of the packets some team has already accepted."""
    return {e.event.payload.packet_sha256 for e in ledger if isinstance(e.event, TakeoverAccepted)}


def available_controls(
    who: Identity,
    state: IncidentState | None,
    control: ControlState,
    accepted: set[str] | frozenset[str] = frozenset(),
) -> Controls:
    """The controls to show `who`: the core's `check_control` on the event they would
    send. Observers and service identities get none."""
    kill = None
    if who.has(Role.ADMIN) and who.kind == "human":
        kill = "release" if control.kill_switch else "engage"
    if state is None or not state.opened or state.closed or who.kind != "human":
        return Controls(kill_switch=kill)
    actor = who.actor()
    iid = state.incident_id

    def allowed(
        event: HoldDeclared | ResumeDirected | TakeoverRequested | TakeoverAccepted,
    ) -> bool:
        return check_control(state, event) is None

    hold = state.hold is None and allowed(
        new_event(
            HoldDeclared,
            incident_id=iid,
            payload=HoldDeclaredPayload(reason=HoldReason.MANUAL),
            actor=actor,
            producer=PRODUCER,
        )
    )
    resume = allowed(
        new_event(
            ResumeDirected,
            incident_id=iid,
            payload=ResumeDirectedPayload(),
            actor=actor,
            producer=PRODUCER,
        )
    )
    teams: tuple[str, ...] = ()
    if state.authority is not None:
        teams = tuple(
            t
            for t in state.authority.takeover_teams
            if t != (state.holder.team if state.holder else None)
            and allowed(
                new_event(
                    TakeoverRequested,
                    incident_id=iid,
                    payload=TakeoverRequestedPayload(to_team=t),
                    actor=actor,
                    producer=PRODUCER,
                )
            )
        )
    accept = None
    ref = packet_ref(state)
    if ref is not None and who.team is not None and ref.sha256 not in accepted:
        event = new_event(
            TakeoverAccepted,
            incident_id=iid,
            payload=TakeoverAcceptedPayload(team=who.team, packet_sha256=ref.sha256),
            actor=actor,
            producer=PRODUCER,
        )
        if allowed(event):
            accept = ref
    return Controls(
        hold=hold,
        resume=resume,
        handoff_teams=teams,
        accept=accept,
        accept_team=who.team if accept else None,
        kill_switch=kill,
    )


class BridgeReader:
    """Reads for the console over one API runtime."""

    def __init__(self, rt: Runtime, *, ledger_rows: int = 1000) -> None:
        self.rt = rt
        self.ledger_rows = ledger_rows

    def state(self, incident_id: str) -> IncidentState:
        return self.rt.view.state(incident_id)

    def ledger(self, incident_id: str) -> list[LedgerEntry]:
        return self.rt.view.ledger(incident_id)

    @property
    def control(self) -> ControlState:
        return self.rt.view.folds.control

    def kill_switch(self) -> KillSwitchView:
        return kill_switch(self.control)

    def incidents(self) -> list[IncidentRow]:
        rows = [
            incident_row(s, self.ledger(s.incident_id))
            for s in list(self.rt.view.folds.states.values())
            if s.opened
        ]
        epoch = datetime.min.replace(tzinfo=UTC)
        rows.sort(key=lambda r: r.last_event_at or epoch, reverse=True)
        return rows

    def fleet_summary(self) -> list[tuple[str, str]]:
        """The fleet SLIs (conn_core.fleet, as GET /v1/fleet/report totals), as rows."""
        report = fleet.report_from(fleet_api.incident_figures(self.rt.view))
        return list(fleet.iter_rows(report["totals"]))

    def fingerprint(self) -> tuple[object, ...]:
        """Changes whenever the incident list would (cheap; no rendering)."""
        c = self.control
        return (
            c.kill_switch,
            c.changed_at,
            tuple(sorted((i, s.sequence) for i, s in list(self.rt.view.folds.states.items()))),
        )

    def incident(
        self,
        who: Identity,
        incident_id: str,
        now: datetime | None = None,
        *,
        with_ledger: bool = True,
    ) -> IncidentPage:
        """The whole page; `with_ledger=False` for the panels alone (live updates)."""
        now = now or datetime.now(UTC)
        full = privileged(who)
        state = self.state(incident_id)
        ledger = self.ledger(incident_id)
        shown = ledger[-self.ledger_rows :] if with_ledger else []
        hold = state.hold
        current = current_step(state)
        source = _authority_source(ledger)
        return IncidentPage(
            row=incident_row(state, ledger),
            opened=state.opened,
            hold=(
                HoldView(hold.reason.value, _shown(hold.detail, full), hold.since_sequence)
                if hold
                else None
            ),
            current_step=step_view(current, full) if current else None,
            open_step=state.open_step,
            pending=tuple(step_view(d, full) for d in state.pending_directives()),
            regions=regions(state, ledger, now),
            authority=(
                AuthorityView(
                    name=state.authority.name,
                    version=state.authority.version,
                    sha256=state.authority_sha256,
                    source_file=source,
                    regions=tuple(state.authority.regions),
                    takeover_teams=tuple(state.authority.takeover_teams),
                    proposals=open_proposals(state),
                )
                if state.authority
                else None
            ),
            refusals=refusals(ledger, full),
            packet=packet_ref(state),
            takeover_requested_to=state.takeover_requested_to,
            kill_switch=self.kill_switch(),
            head_sequence=ledger[-1].sequence if ledger else 0,
            head_hash=ledger[-1].hash if ledger else None,
            ledger=tuple(ledger_row(e, full) for e in shown),
            ledger_hidden=len(ledger) - len(shown) if with_ledger else 0,
            controls=available_controls(who, state, self.control, accepted_packets(ledger)),
            now=now,
            approvals=approval_views(who, state, now),
        )

    def rows_after(self, who: Identity, incident_id: str, after: int) -> list[LedgerRow]:
        """Ledger rows after `after`, as `who` may read them."""
        full = privileged(who)
        return [ledger_row(e, full) for e in self.ledger(incident_id) if e.sequence > after]

    async def packet(self, who: Identity, incident_id: str) -> PacketPage | None:
        state = self.state(incident_id)
        if not state.opened:
            return None
        found = await packet_for(self.rt, state)
        if found is None:
            return None
        ref = PacketRefView(
            sha256=found["packet_sha256"],
            to_team=found["to_team"],
            trigger=found["trigger"],
            sequence=found["published_at_sequence"],
        )
        packet: TakeoverPacket | None = None
        matches: bool | None = None
        errors: list[str] = []
        if found.get("packet") is not None:
            try:
                packet = TakeoverPacket.model_validate(found["packet"])
                matches = sha256_json(packet.model_dump(mode="json")) == ref.sha256
            except ValidationError as exc:
                errors.append(f"the stored packet does not parse: {exc.error_count()} errors")
                matches = False
        ledger = self.ledger(incident_id)
        controls = available_controls(who, state, self.control, accepted_packets(ledger))
        freshness = packet_freshness(state, ref.sha256)
        accepted_by = next(
            (
                f"{e.event.actor.id} ({e.event.payload.team}) at #{e.sequence}"
                for e in ledger
                if isinstance(e.event, TakeoverAccepted)
                and e.event.payload.packet_sha256 == ref.sha256
            ),
            None,
        )
        if matches is False and controls.accept is not None:
            # Never offer to accept content that does not match the hash it names.
            controls = Controls(
                hold=controls.hold,
                resume=controls.resume,
                handoff_teams=controls.handoff_teams,
                kill_switch=controls.kill_switch,
            )
        return PacketPage(
            incident_id=incident_id,
            title=state.title,
            ref=ref,
            packet=packet,
            content_matches=matches,
            markdown=found.get("markdown"),
            ledger_sequence=found["ledger_sequence"],
            ledger_hash=found["ledger_hash"],
            source=found["source"],
            controls=controls,
            kill_switch=self.kill_switch(),
            current=freshness == "current",
            freshness=freshness,
            accepted_by=accepted_by,
            errors=errors,
        )
