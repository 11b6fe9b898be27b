"""The fold: `evolve(state, event)` applied over an incident's events in log order.

Replaying `conn.events` from offset 0 through `evolve` rebuilds every
incident's bridge state exactly; nothing else is a source of truth. Holds are
*derived* here (from verdicts, conflicts and failures), so every service sees
the same hold at the same ledger position with no message in between.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import singledispatch

from conn_core import approvals
from conn_core.rules import check_authority, check_control
from conn_core.state import (
    FINISHED,
    AuthorityProposal,
    ControlState,
    DirectiveRecord,
    DirectiveStatus,
    Hold,
    IncidentState,
    PacketRef,
)
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
    IncidentClosed,
    IncidentOpened,
    IncidentRecordUpdated,
    KillSwitchEngaged,
    KillSwitchReleased,
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
from conn_schemas.observations import Observation
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    ConnHolder,
    DrainWorkerPool,
    HoldReason,
    RefusalReason,
    RestartDependencyTier,
    ScaleWorkerPool,
    Verdict,
)

HOLDING_REFUSALS = frozenset({RefusalReason.EXPECTATION_CONFLICT, RefusalReason.PARTIAL_STATE})
"""Refusals that mean "what we see is not what was expected": derive a hold."""


PACKET_NEUTRAL = (
    AlertReceived,
    IncidentRecordUpdated,
    TakeoverPacketPublished,
    AuthorityChangeProposed,
    AuthorityChangeApproved,
    KillSwitchEngaged,
    KillSwitchReleased,
)
"""Records that change nothing a takeover packet shows."""


def evolve(state: IncidentState, event: Envelope) -> IncidentState:
    """Apply one event of `state.incident_id` (in log order) and return the state.

    Every record takes a ledger position, but a record whose `event_id` was seen
    before (re-published by hand, or by a producer retry outside idempotence)
    changes nothing else: a replayed failing snapshot does not hold again, a
    replayed outcome does not finish a step twice.

    Two facts are kept for deciding at the moment of acting: every unfinished
    directive remembers the first record after it (not its own) that changed the
    incident's state (`superseded_at`, what the executor re-checks before a side
    effect), and `packet_changed_at` moves whenever a takeover packet's content
    would change (so the packager republishes and a stale packet cannot be accepted)."""
    state.sequence += 1
    state.last_event_at = event.occurred_at
    if event.event_id in state.seen_event_ids:
        state.duplicate_events += 1
        return state
    state.seen_event_ids.add(event.event_id)
    ignored_before = state.ignored_controls + state.ignored_authority
    _apply(event, state)
    if state.ignored_controls + state.ignored_authority != ignored_before:
        return state  # a control or authority record the rules did not honour
    if state.state_changed_at == state.sequence or isinstance(event, TakeoverRequested):
        _supersede(state, event)
    if not isinstance(event, PACKET_NEUTRAL):
        state.packet_changed_at = state.sequence
    return state


def _supersede(state: IncidentState, event: Envelope) -> None:
    """`event` changed the state: every unfinished directive before it (other than the
    one the event belongs to) is now based on an outdated picture."""
    for cid in state.unfinished:
        if cid == event.correlation_id:
            continue
        record = state.directives[cid]
        if record.superseded_at is None and record.issued_sequence < state.sequence:
            record.superseded_at = state.sequence
            record.superseded_by = event.event_type


def fold(events: Iterable[Envelope], incident_id: str) -> IncidentState:
    """Build an incident's state from its events (others are skipped)."""
    state = IncidentState(incident_id=incident_id)
    for event in events:
        if event.incident_id == incident_id:
            evolve(state, event)
    return state


def fold_all(events: Iterable[Envelope]) -> dict[str, IncidentState]:
    """Build every incident's state from an interleaved stream."""
    states: dict[str, IncidentState] = {}
    for event in events:
        state = states.get(event.incident_id)
        if state is None:
            state = states[event.incident_id] = IncidentState(incident_id=event.incident_id)
        evolve(state, event)
    return states


def evolve_control(control: ControlState, event: Envelope) -> ControlState:
    """Apply one `conn.control` event (kill switch). An `event_id` seen before (a
    genuine record replayed, signature and all) changes nothing, as in `evolve`."""
    if isinstance(event, KillSwitchEngaged | KillSwitchReleased):
        if event.event_id in control.seen_event_ids:
            control.duplicate_events += 1
            return control
        control.seen_event_ids.add(event.event_id)
    if isinstance(event, KillSwitchEngaged):
        control.kill_switch = True
        control.reason = event.payload.reason
    elif isinstance(event, KillSwitchReleased):
        control.kill_switch = False
        control.reason = event.payload.reason
    else:
        return control
    control.changed_at = event.occurred_at
    control.changed_by = event.actor.id
    return control


def _state_changed(state: IncidentState) -> None:
    state.state_changed_at = state.sequence


def _set_status(state: IncidentState, record: DirectiveRecord, status: DirectiveStatus) -> None:
    record.status = status
    if status in FINISHED:
        state.unfinished.discard(record.correlation_id)
    else:
        state.unfinished.add(record.correlation_id)


def _hold(state: IncidentState, reason: HoldReason, detail: str, correlation: str | None) -> None:
    state.hold = Hold(reason, detail, state.sequence, correlation)
    state.holds_declared += 1


def _remember_readings(state: IncidentState, observation: Observation) -> None:
    for reading in observation.metrics:
        known = state.last_readings.get(reading.region)
        if known is None or reading.observed_at >= known.observed_at:
            state.last_readings[reading.region] = reading


@singledispatch
def _apply(event: Envelope, state: IncidentState) -> None:
    """Events with no effect on the bridge state (alerts, record updates...)."""


@_apply.register
def _(event: IncidentOpened, state: IncidentState) -> None:
    if state.opened:
        return
    state.opened = True
    state.title = event.payload.title
    state.service = event.payload.service
    state.opened_at = event.occurred_at
    _state_changed(state)


@_apply.register
def _(event: AuthorityDeclared, state: IncidentState) -> None:
    if check_authority(state, event) is not None:
        state.ignored_authority += 1
        return
    authority = event.payload.authority
    state.authority = authority
    state.authority_sha256 = event.payload.content_sha256
    state.authority_source = event.payload.source_file
    state.holder = authority.holder
    if event.payload.approval is not None:
        state.authority_proposals[event.payload.approval].applied = True
    _state_changed(state)


@_apply.register
def _(event: AuthorityChangeProposed, state: IncidentState) -> None:
    if check_authority(state, event) is not None:
        state.ignored_authority += 1
        return
    p = event.payload
    state.authority_proposals[p.proposal_id] = AuthorityProposal(
        proposal_id=p.proposal_id,
        authority=p.authority,
        content_sha256=p.content_sha256,
        base_sha256=p.base_sha256,
        source_file=p.source_file,
        proposer=event.actor.id,
        widenings=p.widenings,
        proposed_sequence=state.sequence,
    )


@_apply.register
def _(event: AuthorityChangeApproved, state: IncidentState) -> None:
    if check_authority(state, event) is not None:
        state.ignored_authority += 1
        return
    state.authority_proposals[event.payload.proposal_id].approved_by = event.actor.id


@_apply.register
def _(event: DirectiveIssued, state: IncidentState) -> None:
    cid = event.correlation_id
    if cid is None or cid in state.directives:
        return  # a replayed or duplicate directive changes nothing
    consequential = event.payload.action.action in CONSEQUENTIAL_ACTIONS
    state.directives[cid] = DirectiveRecord(
        correlation_id=cid,
        action=event.payload.action,
        actor_id=event.actor.id,
        issued_sequence=state.sequence,
        based_on_sequence=event.payload.based_on_sequence,
        consequential=consequential,
        expectation=event.payload.expectation,
        issuer=event.actor,
    )
    state.unfinished.add(cid)
    if consequential and state.open_step is None:
        state.open_step = cid
    approvals.on_directive(state, event)


@_apply.register
def _(event: ApprovalRecorded, state: IncidentState) -> None:
    if not approvals.apply_vote(state, event):
        state.ignored_controls += 1  # e.g. a forged approval naming a stale packet


@_apply.register
def _(event: ApprovalDeclined, state: IncidentState) -> None:
    if not approvals.apply_vote(state, event):
        state.ignored_controls += 1


def _directive(state: IncidentState, event: Envelope) -> DirectiveRecord | None:
    if event.correlation_id is None:
        return None
    return state.directives.get(event.correlation_id)


@_apply.register
def _(event: DirectiveAccepted, state: IncidentState) -> None:
    record = _directive(state, event)
    if record is None:
        return
    if record.status is not DirectiveStatus.ISSUED:
        # A second decision (a fenced-out executor, a retry): the first one stands.
        state.conflicting_records += 1
        return
    _set_status(state, record, DirectiveStatus.ACCEPTED)
    if record.consequential:
        state.last_step = record.correlation_id
        state.open_step = record.correlation_id


@_apply.register
def _(event: DirectiveRefused, state: IncidentState) -> None:
    reason = event.payload.reason
    state.refusals[reason] = state.refusals.get(reason, 0) + 1
    record = _directive(state, event)
    cid = event.correlation_id
    if record is None and cid is not None and event.payload.action is not None:
        # Refused at the API, before it ever became a DirectiveIssued: still a
        # blocked directive a specialist taking over should see.
        action = event.payload.action
        state.directives[cid] = DirectiveRecord(
            correlation_id=cid,
            action=action,
            actor_id=event.actor.id,
            issued_sequence=state.sequence,
            based_on_sequence=event.payload.checked_at_sequence,
            consequential=action.action in CONSEQUENTIAL_ACTIONS,
            status=DirectiveStatus.REFUSED,
            refusal=reason,
            refusal_detail=event.payload.detail,
        )
    elif record is not None and record.status is DirectiveStatus.ISSUED:
        _set_status(state, record, DirectiveStatus.REFUSED)
        record.refusal = reason
        record.refusal_detail = event.payload.detail
        if state.open_step == record.correlation_id:
            state.open_step = None
    elif record is not None:
        state.conflicting_records += 1  # decided before: the first decision stands
    if reason in HOLDING_REFUSALS:
        hold_reason = (
            HoldReason.EXPECTATION_CONFLICT
            if reason is RefusalReason.EXPECTATION_CONFLICT
            else HoldReason.PARTIAL_STATE
        )
        _hold(state, hold_reason, event.payload.detail, event.correlation_id)
        _state_changed(state)


@_apply.register
def _(event: StateGathered, state: IncidentState) -> None:
    _remember_readings(state, event.payload.observation)
    state.last_observation = event.payload.observation
    record = _directive(state, event)
    if event.payload.purpose == "pre_step" and record is not None and record.pre_step is None:
        record.pre_step = event.payload.observation
    _state_changed(state)


STARTABLE = frozenset({DirectiveStatus.ISSUED, DirectiveStatus.ACCEPTED, DirectiveStatus.REFUSED})
"""A StepStarted always shows the step as started, even after a refusal that an
executor which lost its claim appended: an executed step is never hidden."""


@_apply.register
def _(event: StepStarted, state: IncidentState) -> None:
    record = _directive(state, event)
    if record is None:
        return
    if record.status not in STARTABLE:
        state.conflicting_records += 1  # started (or failed at the gate) before
        return
    if record.status is not DirectiveStatus.ACCEPTED:
        state.conflicting_records += 1
    _set_status(state, record, DirectiveStatus.STARTED)
    record.started_at = event.occurred_at
    record.started_by = event.payload.executor_id
    record.undo = event.payload.undo
    action = record.action
    if record.consequential:
        state.consequential_steps += 1
        state.last_step = record.correlation_id
        if state.open_step is None:
            state.open_step = record.correlation_id
    if isinstance(action, DrainWorkerPool):
        state.drained_pools.setdefault(action.region, set()).add(action.pool)
    elif isinstance(action, RestartDependencyTier):
        key = (action.tier, action.region)
        state.restarts[key] = state.restarts.get(key, 0) + 1
    elif isinstance(action, ScaleWorkerPool):
        # Scaled back (e.g. an undo of a drain): no longer counts as drained.
        state.drained_pools.get(action.region, set()).discard(action.pool)
    _state_changed(state)


def _finish(
    state: IncidentState, event: Envelope, status: DirectiveStatus
) -> DirectiveRecord | None:
    record = _directive(state, event)
    if record is None:
        return None
    if record.status not in (DirectiveStatus.STARTED, DirectiveStatus.ACCEPTED):
        # A late outcome (e.g. of a fenced-out executor after StepOutcomeUnknown was
        # reported): the first outcome stands, so every fold reaches the same answer.
        state.conflicting_records += 1
        return None
    _set_status(state, record, status)
    record.finished_at = event.occurred_at
    _state_changed(state)
    return record


@_apply.register
def _(event: StepSucceeded, state: IncidentState) -> None:
    record = _finish(state, event, DirectiveStatus.SUCCEEDED)
    if record is not None:
        record.result = event.payload.result


@_apply.register
def _(event: StepFailed, state: IncidentState) -> None:
    record = _finish(state, event, DirectiveStatus.FAILED)
    if record is None:
        return
    if event.payload.not_started:
        # Refused at the last gate: nothing changed, so nothing is left to verify.
        record.not_started = True
        if state.open_step == record.correlation_id:
            state.open_step = None
    elif record.consequential:
        _hold(state, HoldReason.STEP_FAILED, event.payload.error, record.correlation_id)


@_apply.register
def _(event: StepOutcomeUnknown, state: IncidentState) -> None:
    _finish(state, event, DirectiveStatus.OUTCOME_UNKNOWN)
    _remember_readings(state, event.payload.observation)


@_apply.register
def _(event: VerificationSnapshot, state: IncidentState) -> None:
    payload = event.payload
    if event.correlation_id is not None:
        state.snapshot_correlations.add(event.correlation_id)
    for region in payload.regions:
        _remember_readings(state, Observation(metrics=region.readings))
        state.last_verification[region.region] = region
        state.last_verification_at[region.region] = event.occurred_at
    state.last_control_plane = payload.control_plane
    state.last_verdict = payload.verdict
    step = state.directives.get(payload.step_correlation_id or "")
    if step is not None:
        step.verdict = payload.verdict
    if payload.verdict is Verdict.RECOVERED:
        # Verification passed: the one-step gate opens. A hold stays until resumed.
        if step is not None and state.open_step == step.correlation_id:
            state.open_step = None
    else:
        _hold(
            state,
            HoldReason.VERIFICATION,
            f"{payload.verdict.value}: {payload.detail}",
            payload.step_correlation_id or event.correlation_id,
        )
    _state_changed(state)


@_apply.register
def _(event: HoldDeclared, state: IncidentState) -> None:
    if check_control(state, event) is not None:
        state.ignored_controls += 1
        return
    _hold(state, event.payload.reason, event.payload.detail, event.correlation_id)
    _state_changed(state)


@_apply.register
def _(event: ResumeDirected, state: IncidentState) -> None:
    if check_control(state, event) is not None:
        state.ignored_controls += 1
        return
    state.hold = None
    state.open_step = None
    _state_changed(state)


@_apply.register
def _(event: TakeoverRequested, state: IncidentState) -> None:
    if check_control(state, event) is not None:
        state.ignored_controls += 1
        return
    state.takeover_requested_to = event.payload.to_team


@_apply.register
def _(event: TakeoverPacketPublished, state: IncidentState) -> None:
    p = event.payload
    if state.last_packet is not None and p.ledger_sequence < state.last_packet.basis:
        return  # an older packet published late never replaces a newer one
    state.last_packet = PacketRef(
        p.packet_sha256, p.to_team, p.trigger, state.sequence, p.ledger_sequence
    )


@_apply.register
def _(event: TakeoverAccepted, state: IncidentState) -> None:
    if check_control(state, event) is not None:
        state.ignored_controls += 1
        return
    state.holder = ConnHolder(identity=event.actor.id, team=event.payload.team)
    state.hold = None
    state.open_step = None
    state.takeover_requested_to = None
    state.takeovers_accepted += 1
    _state_changed(state)


@_apply.register
def _(_event: IncidentClosed, state: IncidentState) -> None:
    state.closed = True
    _state_changed(state)
