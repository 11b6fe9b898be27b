"""Fleet SLIs: is Conn itself doing its job? Pure functions over decoded ledger events.

The only input is the ledger: the trusted events of `conn.events` (what the trust
layer let through: signed by a principal entitled to the type), in log order. Every
figure is therefore reproduced by `conn replay` from the topic, and the API, the
packager's gauges and the CLI report agree because they call the same function over
the same events. The definitions (README, "Fleet SLIs") in short:

- A record is counted once (dedupe by `event_id`), and only as the fold honours it
  (`conn_core.fold.evolve` runs alongside): a takeover accepted by a team it was not
  addressed to, or a second decision on a directive, counts for nothing.
- *Side effect*: a StepStarted (or an outcome of a step no StepStarted claimed) that
  did not end in StepFailed(not_started). It is *entitled* when its directive was
  issued and accepted (never refused) before it started and, where the authority in
  force requires approvals (two-person rule), the quorum was present, undeclined and in
  time when it started (`_entitled`).
- *Safe completion*: a closed incident in which every consequential side effect was
  verified (a RECOVERED snapshot linked to the step) or was followed by an accepted
  takeover, every side effect was entitled, and no step started twice.
- *Caught*: requests (distinct correlation ids of DirectiveIssued or DirectiveRefused)
  whose first decision is a refusal and that never started, by reason.
- *Trace complete*: a consequential step (accepted or started, not stopped at the last
  gate) whose DirectiveIssued, DirectiveAccepted, StepStarted, outcome and linked
  VerificationSnapshot are all present with its correlation id, in that log order.
- *False action*: a consequential side effect none of whose linked verifications was
  RECOVERED, followed by another consequential side effect on the same target (the
  commander's undo, or a specialist's reversal after a takeover).
- *Packet reliability*: accepted takeovers (honoured TakeoverAccepted, which names the
  packet hash) of closed incidents after which no remediation was repeated (a
  verified step's action re-run, or a pre-handoff step started again) and none was
  skipped (a partial change at acceptance that was never verified nor acted on again).
- Seed 001: time to first action (incident start, the first alert or the opening,
  whichever is earlier, to the first consequential StepStarted), time to verified
  recovery (start to the first RECOVERED snapshot after that), escalation rate
  (incidents with a takeover packet or an honoured handoff request) and false-action
  rate (incidents with at least one false action).

An incident belongs to the ISO week (and the `since`/`until` window) of its start.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conn_core import approvals
from conn_core.fold import evolve
from conn_core.state import DirectiveStatus, IncidentState
from conn_schemas.events import (
    AlertReceived,
    DirectiveAccepted,
    DirectiveIssued,
    DirectiveRefused,
    Envelope,
    IncidentClosed,
    IncidentOpened,
    StepFailed,
    StepOutcomeUnknown,
    StepStarted,
    StepSucceeded,
    TakeoverAccepted,
    TakeoverPacketPublished,
    TakeoverRequested,
    VerificationSnapshot,
)
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    Action,
    DisableFlagRule,
    DrainWorkerPool,
    RestartDependencyTier,
    Verdict,
)

DEFINITIONS_VERSION = 1
"""Bumped whenever a definition changes (so a trend never mixes two meanings)."""

OUTCOMES = (StepSucceeded, StepFailed, StepOutcomeUnknown)


def target_of(action: Action) -> tuple[str, ...] | None:
    """The exact thing a consequential action changes (None for read-only actions).

    Conn's bounded verbs have no inverse verbs yet, so an undo or a reversal shows in
    the ledger as a later step on the same target; an inverse verb (enable a rule,
    undrain a pool) names the same target and is recognised without change here."""
    if isinstance(action, DisableFlagRule):
        return ("flag_rule", action.flag, action.rule, action.region)
    if isinstance(action, DrainWorkerPool):
        return ("worker_pool", action.pool, action.region)
    if isinstance(action, RestartDependencyTier):
        return ("tier", action.tier, action.region)
    return None


@dataclass
class _Step:
    correlation_id: str
    action: Action | None = None
    consequential: bool = False
    issued: int | None = None
    accepted: int | None = None
    refused: str | None = None
    """Reason of the first decision, if that was a refusal."""
    started: int | None = None
    starts: int = 0
    entitled: bool = True
    outcome: int | None = None
    not_started: bool = False
    verified: int | None = None
    """Position of the first snapshot linked to this step."""
    recovered: int | None = None
    """Position of the first RECOVERED snapshot linked to this step."""

    @property
    def begun(self) -> int | None:
        """Ledger position where the side effect shows first (its start, or its outcome)."""
        return self.started if self.started is not None else self.outcome

    @property
    def side_effect(self) -> bool:
        return (self.started is not None or self.outcome is not None) and not self.not_started

    @property
    def consequential_effect(self) -> bool:
        return self.consequential and self.side_effect


@dataclass(frozen=True)
class IncidentSLIs:
    """One incident's facts, as the ledger shows them."""

    incident_id: str
    started_at: datetime | None
    closed: bool
    safe_completion: bool
    requests: int
    caught_by_reason: Mapping[str, int]
    consequential_steps: int
    traces: int
    traces_complete: int
    false_actions: int
    packets_accepted: int
    packets_judged: int
    packets_reliable: int
    escalated: bool
    unauthorized_side_effects: int
    duplicate_side_effects: int
    ignored_records: int
    """Records the fold did not honour (controls/authority refused by the rules, second
    decisions on a directive) and duplicates: present in the ledger, counted nowhere."""
    time_to_first_action: float | None
    time_to_verified_recovery: float | None


def _entitled(step: _Step, status_before: DirectiveStatus | None, approved: bool) -> bool:
    """Was the step's side effect entitled when it started? Its directive was issued and
    accepted (the first decision), never refused, and — when the authority requires
    approvals — its quorum stood at that moment (`approved`, from the fold before it)."""
    return (
        step.issued is not None
        and step.accepted is not None
        and step.refused is None
        and status_before is DirectiveStatus.ACCEPTED
        and approved
    )


@dataclass
class _Incident:
    incident_id: str
    state: IncidentState
    steps: dict[str, _Step] = field(default_factory=dict)
    position: int = 0
    first_alert_at: datetime | None = None
    opened_at: datetime | None = None
    first_event_at: datetime | None = None
    closed: bool = False
    escalated: bool = False
    acceptances: list[int] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)
    orphan_effects: int = 0
    first_action: tuple[int, datetime] | None = None
    first_recovery_at: datetime | None = None

    def step(self, cid: str) -> _Step:
        found = self.steps.get(cid)
        if found is None:
            found = self.steps[cid] = _Step(cid)
        return found


def _observe(inc: _Incident, event: Envelope) -> None:
    """Apply one (first-seen) event to the fold and record what the fold honoured."""
    state = inc.state
    cid = event.correlation_id
    record = state.directives.get(cid) if cid is not None else None
    status_before = record.status if record is not None else None
    takeovers_before = state.takeovers_accepted
    ignored_before = state.ignored_controls
    # Two-person rule: judged on the fold as it stood when the step started.
    approved = not (
        isinstance(event, StepStarted)
        and cid is not None
        and record is not None
        and approvals.gate(state, cid, event.occurred_at) is not None
    )
    evolve(state, event)
    inc.position += 1
    pos = inc.position
    if inc.first_event_at is None:
        inc.first_event_at = event.occurred_at
    if isinstance(event, AlertReceived) and inc.first_alert_at is None:
        inc.first_alert_at = event.occurred_at
    elif isinstance(event, IncidentOpened) and inc.opened_at is None:
        inc.opened_at = event.occurred_at
    elif isinstance(event, IncidentClosed):
        inc.closed = True
    elif isinstance(event, DirectiveIssued) and cid is not None:
        step = inc.step(cid)
        if step.issued is None and record is None:  # the fold ignores a second one
            step.issued = pos
            step.action = event.payload.action
            step.consequential = event.payload.action.action in CONSEQUENTIAL_ACTIONS
    elif isinstance(event, DirectiveAccepted) and cid is not None:
        if status_before is DirectiveStatus.ISSUED:
            inc.step(cid).accepted = pos
    elif isinstance(event, DirectiveRefused):
        key = cid if cid is not None else f"event:{event.event_id}"
        existing = inc.steps.get(key)
        first = existing is None or (existing.accepted is None and existing.refused is None)
        if first and (record is None or status_before is DirectiveStatus.ISSUED):
            step = inc.step(key)
            step.refused = event.payload.reason.value
            if step.action is None and event.payload.action is not None:
                step.action = event.payload.action
                step.consequential = event.payload.action.action in CONSEQUENTIAL_ACTIONS
    elif isinstance(event, StepStarted):
        _started(inc, event, record is not None, status_before, pos, approved)
    elif isinstance(event, OUTCOMES):
        _outcome(inc, event, record is not None, status_before, pos)
    elif isinstance(event, VerificationSnapshot):
        inc.snapshots.append(pos)
        linked = inc.steps.get(event.payload.step_correlation_id or "")
        recovered = event.payload.verdict is Verdict.RECOVERED
        if linked is not None and linked.side_effect:
            if linked.verified is None:
                linked.verified = pos
            if recovered and linked.recovered is None:
                linked.recovered = pos
        if recovered and inc.first_action is not None and inc.first_recovery_at is None:
            inc.first_recovery_at = event.occurred_at
    elif isinstance(event, TakeoverPacketPublished):
        inc.escalated = True
    elif isinstance(event, TakeoverRequested):
        if state.ignored_controls == ignored_before:
            inc.escalated = True
    elif isinstance(event, TakeoverAccepted) and state.takeovers_accepted > takeovers_before:
        inc.acceptances.append(pos)
        inc.escalated = True


def _claim(step: _Step, event: Envelope) -> None:
    """A step record seen before (or without) its directive: take its action from it."""
    action = getattr(event.payload, "action", None)
    if step.action is None and action is not None:
        step.action = action
        step.consequential = action.action in CONSEQUENTIAL_ACTIONS


def _started(
    inc: _Incident,
    event: StepStarted,
    known: bool,
    status_before: DirectiveStatus | None,
    pos: int,
    approved: bool,
) -> None:
    cid = event.correlation_id
    if cid is None:
        inc.orphan_effects += 1  # a side effect no directive could have asked for
        return
    step = inc.step(cid)
    step.starts += 1
    if step.started is not None:
        return
    step.started = pos
    if known:
        step.entitled = _entitled(step, status_before, approved)
    else:  # no directive in the ledger (yet): whatever lands later, never entitled
        step.entitled = False
        _claim(step, event)
    if step.consequential and inc.first_action is None:
        inc.first_action = (pos, event.occurred_at)


def _outcome(
    inc: _Incident,
    event: Envelope,
    known: bool,
    status_before: DirectiveStatus | None,
    pos: int,
) -> None:
    not_started = isinstance(event, StepFailed) and event.payload.not_started
    cid = event.correlation_id
    if cid is None:
        if not not_started:
            inc.orphan_effects += 1
        return
    step = inc.step(cid)
    if not known or status_before not in (DirectiveStatus.STARTED, DirectiveStatus.ACCEPTED):
        if step.started is None and step.outcome is None and not not_started:
            # The outcome of a side effect whose directive is unknown or was never
            # accepted (the fold ignores it): still a side effect, never entitled.
            step.outcome = pos
            step.entitled = False
            _claim(step, event)
        return  # otherwise a late or second outcome: the first one stands
    step.outcome = pos
    if not_started:
        step.not_started = True
    elif step.started is None:
        # An outcome without a StepStarted: a side effect nobody claimed first.
        step.entitled = False


def _packet_reliable(inc: _Incident, accepted_at: int) -> bool:
    effects = [s for s in inc.steps.values() if s.consequential_effect]
    before = [s for s in effects if (s.begun or 0) < accepted_at]
    after = [s for s in effects if (s.begun or 0) > accepted_at]
    verified_targets = {
        target_of(s.action)
        for s in before
        if s.action is not None and s.recovered is not None and s.recovered < accepted_at
    }
    for s in after:
        if s.action is not None and target_of(s.action) in verified_targets:
            return False  # repeated: a remediation that had already worked was re-run
    for s in before:
        if s.starts > 1:
            return False  # repeated: a pre-handoff step started again (even if later)
    looked_at = any(p > accepted_at for p in inc.snapshots)
    targets_after = {target_of(s.action) for s in after if s.action is not None}
    for s in before:
        partial = s.recovered is None or s.recovered > accepted_at
        if (
            partial
            and not looked_at
            and (s.action is None or target_of(s.action) not in targets_after)
        ):
            return False  # skipped: a partial change the new holder never verified nor touched
    return True


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _summarise(inc: _Incident) -> IncidentSLIs:
    steps = list(inc.steps.values())
    effects = [s for s in steps if s.consequential_effect]
    unauthorized = inc.orphan_effects + sum(1 for s in steps if s.side_effect and not s.entitled)
    duplicates = sum(s.starts - 1 for s in steps if s.starts > 1)
    last_acceptance = max(inc.acceptances, default=None)

    def settled(s: _Step) -> bool:
        if s.recovered is not None:
            return True
        return last_acceptance is not None and last_acceptance > (s.begun or 0)

    safe = inc.closed and unauthorized == 0 and duplicates == 0 and all(map(settled, effects))
    caught: dict[str, int] = {}
    for s in steps:
        if s.refused is not None and not s.side_effect:
            caught[s.refused] = caught.get(s.refused, 0) + 1
    traced = [
        s
        for s in steps
        if s.consequential and (s.accepted is not None or s.side_effect) and not s.not_started
    ]
    complete = sum(
        1
        for s in traced
        if s.issued is not None
        and s.accepted is not None
        and s.started is not None
        and s.outcome is not None
        and s.verified is not None
        and s.issued < s.accepted < s.started < s.outcome < s.verified
    )
    false_actions = 0
    for s in effects:
        if s.verified is None or s.recovered is not None or s.action is None:
            continue
        target = target_of(s.action)
        if any(
            t is not s
            and t.action is not None
            and target_of(t.action) == target
            and (t.begun or 0) > (s.begun or 0)
            for t in effects
        ):
            false_actions += 1
    judged = inc.acceptances if inc.closed else []
    reliable = sum(1 for a in judged if _packet_reliable(inc, a))
    start_at = min(
        (t for t in (inc.first_alert_at, inc.opened_at) if t is not None),
        default=inc.first_event_at,
    )
    state = inc.state
    ignored = (
        state.ignored_controls
        + state.ignored_authority
        + state.conflicting_records
        + state.duplicate_events
    )
    return IncidentSLIs(
        incident_id=inc.incident_id,
        started_at=start_at,
        closed=inc.closed,
        safe_completion=safe,
        requests=sum(1 for s in steps if s.issued is not None or s.refused is not None),
        caught_by_reason=caught,
        consequential_steps=len(effects),
        traces=len(traced),
        traces_complete=complete,
        false_actions=false_actions,
        packets_accepted=len(inc.acceptances),
        packets_judged=len(judged),
        packets_reliable=reliable,
        escalated=inc.escalated,
        unauthorized_side_effects=unauthorized,
        duplicate_side_effects=duplicates,
        ignored_records=ignored,
        time_to_first_action=_seconds(start_at, inc.first_action[1] if inc.first_action else None),
        time_to_verified_recovery=_seconds(start_at, inc.first_recovery_at),
    )


class FleetTally:
    """`incident_slis`, fed as the ledger grows: `observe` each new event (each incident's
    own events in its log order), `slis` summarises again only the incidents observed
    since the previous call. Fed the same events, `slis()` equals `incident_slis`."""

    def __init__(self) -> None:
        self._incidents: dict[str, _Incident] = {}
        self._summaries: dict[str, IncidentSLIs] = {}
        self._changed: set[str] = set()

    def observe(self, event: Envelope) -> None:
        """A record whose `event_id` was seen before is skipped, as the fold skips it."""
        inc = self._incidents.get(event.incident_id)
        if inc is None:
            inc = self._incidents[event.incident_id] = _Incident(
                event.incident_id, IncidentState(incident_id=event.incident_id)
            )
        self._changed.add(event.incident_id)
        if event.event_id in inc.state.seen_event_ids:
            inc.state.duplicate_events += 1
            return
        _observe(inc, event)

    def slis(self) -> dict[str, IncidentSLIs]:
        for incident_id in self._changed:
            self._summaries[incident_id] = _summarise(self._incidents[incident_id])
        self._changed.clear()
        return {iid: self._summaries[iid] for iid in self._incidents}


def incident_slis(events: Iterable[Envelope]) -> dict[str, IncidentSLIs]:
    """Per-incident facts from trusted events in log order (incidents may interleave;
    each incident's own events must be in its log order). A record whose `event_id`
    was seen before is skipped, as the fold skips it."""
    tally = FleetTally()
    for event in events:
        tally.observe(event)
    return tally.slis()


# --- aggregation --------------------------------------------------------------------------------


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _durations(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "median": None, "mean": None}
    return {
        "count": len(values),
        "median": float(statistics.median(values)),
        "mean": float(statistics.fmean(values)),
    }


def figures(incidents: Iterable[IncidentSLIs]) -> dict[str, Any]:
    """The fleet figures over some incidents (JSON-compatible, key order stable)."""
    items = list(incidents)
    closed = [i for i in items if i.closed]
    caught: dict[str, int] = {}
    for i in items:
        for reason, n in i.caught_by_reason.items():
            caught[reason] = caught.get(reason, 0) + n
    requests = sum(i.requests for i in items)
    caught_total = sum(caught.values())
    traces = sum(i.traces for i in items)
    complete = sum(i.traces_complete for i in items)
    safe = sum(1 for i in closed if i.safe_completion)
    with_false = sum(1 for i in items if i.false_actions)
    judged = sum(i.packets_judged for i in items)
    reliable = sum(i.packets_reliable for i in items)
    escalated = sum(1 for i in items if i.escalated)
    return {
        "incidents": len(items),
        "closed": len(closed),
        "safe_completions": safe,
        "safe_completion_rate": _rate(safe, len(closed)),
        "requests": requests,
        "caught": caught_total,
        "caught_rate": _rate(caught_total, requests),
        "caught_by_reason": dict(sorted(caught.items())),
        "consequential_steps": sum(i.consequential_steps for i in items),
        "traces": traces,
        "traces_complete": complete,
        "trace_completeness": _rate(complete, traces),
        "false_actions": sum(i.false_actions for i in items),
        "incidents_with_false_action": with_false,
        "false_action_rate": _rate(with_false, len(items)),
        "packets_accepted": sum(i.packets_accepted for i in items),
        "packets_judged": judged,
        "packets_reliable": reliable,
        "packet_reliability": _rate(reliable, judged),
        "escalated": escalated,
        "escalation_rate": _rate(escalated, len(items)),
        "unauthorized_side_effects": sum(i.unauthorized_side_effects for i in items),
        "duplicate_side_effects": sum(i.duplicate_side_effects for i in items),
        "ignored_records": sum(i.ignored_records for i in items),
        "time_to_first_action_seconds": _durations(
            [i.time_to_first_action for i in items if i.time_to_first_action is not None]
        ),
        "time_to_verified_recovery_seconds": _durations(
            [i.time_to_verified_recovery for i in items if i.time_to_verified_recovery is not None]
        ),
    }


def iso_week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def in_window(at: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if at is None:
        return since is None and until is None
    return (since is None or at >= since) and (until is None or at < until)


def _aware(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def fleet_report(
    events: Iterable[Envelope],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The fleet report over every incident that started in [since, until): totals and a
    trend per ISO week (of the incident's start). JSON-compatible and deterministic:
    the same ledger gives the same report, whoever computes it."""
    return report_from(incident_slis(events).values(), since=since, until=until)


def report_from(
    incidents: Iterable[IncidentSLIs],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """`fleet_report` from per-incident facts already computed (`incident_slis`): a
    caller may keep them per incident and recompute only the incidents that changed."""
    since, until = _aware(since), _aware(until)
    chosen = sorted(
        (i for i in incidents if in_window(i.started_at, since, until)),
        key=lambda i: (i.started_at.isoformat() if i.started_at else "", i.incident_id),
    )
    weeks: dict[str, list[IncidentSLIs]] = {}
    for i in chosen:
        weeks.setdefault(iso_week(i.started_at) if i.started_at else "unknown", []).append(i)
    return {
        "definitions_version": DEFINITIONS_VERSION,
        "window": {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        },
        "totals": figures(chosen),
        "weeks": [{"week": w, **figures(items)} for w, items in sorted(weeks.items())],
    }


# --- rendering (pure; shared by the CLI, the demo and `conn replay`) ---------------------------

ROWS: tuple[tuple[str, str, str], ...] = (
    ("Incidents", "incidents", "count"),
    ("Safe completion", "safe_completion_rate", "rate"),
    ("Caught (refused before acting)", "caught_rate", "rate"),
    ("Trace completeness", "trace_completeness", "rate"),
    ("False-action rate", "false_action_rate", "rate"),
    ("Packet reliability", "packet_reliability", "rate"),
    ("Escalation rate", "escalation_rate", "rate"),
    ("Time to first action (median)", "time_to_first_action_seconds", "duration"),
    ("Time to verified recovery (median)", "time_to_verified_recovery_seconds", "duration"),
    ("Unauthorized side effects", "unauthorized_side_effects", "count"),
    ("Duplicate side effects", "duplicate_side_effects", "count"),
)
"""(label, key, kind) of the headline rows, in display order."""

_COUNTS = {
    "safe_completion_rate": ("safe_completions", "closed"),
    "caught_rate": ("caught", "requests"),
    "trace_completeness": ("traces_complete", "traces"),
    "false_action_rate": ("incidents_with_false_action", "incidents"),
    "packet_reliability": ("packets_reliable", "packets_judged"),
    "escalation_rate": ("escalated", "incidents"),
}


SHORT = {
    "incidents": "Inc.",
    "safe_completion_rate": "Safe",
    "caught_rate": "Caught",
    "trace_completeness": "Traced",
    "false_action_rate": "False action",
    "packet_reliability": "Packets ok",
    "escalation_rate": "Escal.",
    "time_to_first_action_seconds": "1st action",
    "time_to_verified_recovery_seconds": "Recov.",
    "unauthorized_side_effects": "Unauth.",
    "duplicate_side_effects": "Dup.",
}
"""Column headings of the weekly trend (same order as ROWS)."""


def format_value(fig: Mapping[str, Any], key: str, kind: str, *, compact: bool = False) -> str:
    """One figure as text: a rate with its counts, a duration, or a count (`compact`:
    without the counts, for the trend)."""
    value = fig[key]
    if kind == "rate":
        num, den = _COUNTS[key]
        shown = "n/a" if value is None else f"{value * 100:.1f}%"
        return shown if compact else f"{shown} ({fig[num]}/{fig[den]})"
    if kind == "duration":
        median = value["median"]
        if median is None:
            return "n/a"
        return f"{median:.1f}s" if compact else f"{median:.1f}s (n={value['count']})"
    return str(value)


def iter_rows(fig: Mapping[str, Any], *, compact: bool = False) -> Iterator[tuple[str, str]]:
    """(label, text) of the headline figures; `compact`: short labels and values."""
    for label, key, kind in ROWS:
        yield (SHORT[key] if compact else label), format_value(fig, key, kind, compact=compact)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: totals, refusals by reason, and the weekly trend."""
    totals = report["totals"]
    window = report["window"]
    lines = [
        "# Conn fleet report",
        "",
        f"Window: {window['since'] or 'beginning'} to {window['until'] or 'now'} "
        f"(definitions v{report['definitions_version']})",
        "",
        "| SLI | Value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {value} |" for label, value in iter_rows(totals)]
    if totals["caught_by_reason"]:
        lines += ["", "## Caught, by reason", "", "| Reason | Refusals |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in totals["caught_by_reason"].items()]
    if report["weeks"]:
        heads = ["Week"] + [SHORT[key] for _, key, _ in ROWS]
        lines += ["", "## Trend per ISO week", "", "| " + " | ".join(heads) + " |"]
        lines.append("|" + "---|" * len(heads))
        for week in report["weeks"]:
            cells = [week["week"]] + [value for _, value in iter_rows(week, compact=True)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_time(value: str) -> datetime:
    """A window bound: an ISO 8601 date or time (`Z` allowed; naive means UTC).
    Raises ValueError with a message fit for a user."""
    text = value.strip()
    if not text or len(text) > 64:
        raise ValueError(f"{value[:64]!r} is not an ISO 8601 date or time")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """Parse both bounds; `since` must come before `until`."""
    start = parse_time(since) if since else None
    end = parse_time(until) if until else None
    if start is not None and end is not None and start >= end:
        raise ValueError(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
    return start, end
