"""What needs verifying, derived purely from an incident's folded state.

The verifier keeps no state of its own that matters after a crash: pending
work is whatever the fold says has happened and has no snapshot yet, so a
restart (or a rebalance) re-derives it after catch-up, and a correlation id
that already has a `VerificationSnapshot` in the log is never verified again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from conn_core.state import DirectiveRecord, DirectiveStatus, IncidentState
from conn_schemas.values import (
    ActionType,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    RestartDependencyTier,
    ScaleWorkerPool,
    VerificationCriteria,
    Verify,
    action_regions,
)

StepAction: TypeAlias = (
    DisableFlagRule | DrainWorkerPool | RestartDependencyTier | EnableFlagRule | ScaleWorkerPool
)

RAN = frozenset(
    {DirectiveStatus.STARTED, DirectiveStatus.SUCCEEDED, DirectiveStatus.OUTCOME_UNKNOWN}
)
"""A consequential step in one of these states may have changed a target."""

FINISHED = frozenset({DirectiveStatus.SUCCEEDED, DirectiveStatus.OUTCOME_UNKNOWN})
"""A step whose outcome is in (or unknown): its verification is due."""

VERIFY_DUE = frozenset(
    {
        DirectiveStatus.ACCEPTED,
        DirectiveStatus.STARTED,
        DirectiveStatus.SUCCEEDED,
        DirectiveStatus.OUTCOME_UNKNOWN,
    }
)
"""An accepted verify directive (whether or not an executor also reports it as a step)."""


@dataclass(frozen=True)
class Expected:
    """The control-plane state a step should have produced."""

    action: StepAction
    generation_before: int | None = None
    """Tier generation before a restart (from the StepSucceeded result, else the
    pre-step StateGathered), if known. Unknown: the restart cannot be proven."""


@dataclass(frozen=True)
class Job:
    incident_id: str
    trigger: Literal["step", "directive"]
    correlation_id: str
    """Correlation id of the snapshot (the step's, or the verify directive's)."""
    step_correlation_id: str | None
    regions: tuple[str, ...]
    criteria: VerificationCriteria
    expected: tuple[Expected, ...]
    step_time: datetime | None
    """Readings must be newer than this (step finished); None: the job's start."""
    criteria_source: str
    """Where the criteria came from (for the snapshot detail)."""


def generation_before(record: DirectiveRecord) -> int | None:
    """The tier's generation before the restart: from the step's result when it
    succeeded, else (an unknown outcome: no result) from the state the executor
    gathered right before the step. A restart is proven only by a newer generation."""
    if record.result is not None:
        value: Any = record.result.before.get("generation")
        if not isinstance(value, bool) and isinstance(value, int | float):
            return int(value)
    action = record.action
    if record.pre_step is not None and isinstance(action, RestartDependencyTier):
        for tier in record.pre_step.tiers:
            if (tier.tier, tier.region) == (action.tier, action.region):
                return tier.generation
    return None


def expected_for(record: DirectiveRecord) -> tuple[Expected, ...]:
    action = record.action
    if not isinstance(
        action,
        DisableFlagRule
        | DrainWorkerPool
        | RestartDependencyTier
        | EnableFlagRule
        | ScaleWorkerPool,
    ):
        return ()
    if record.status not in FINISHED:
        return ()
    before = generation_before(record) if isinstance(action, RestartDependencyTier) else None
    return (Expected(action=action, generation_before=before),)


def regions_for(
    state: IncidentState, record: DirectiveRecord, criteria: VerificationCriteria
) -> tuple[str, ...]:
    """With `scope: step_regions`, the regions the action touched. Otherwise every
    region declared in the authority (so a mixed state is seen), plus any the
    action names; without an authority, the action's and the known ones."""
    named = action_regions(record.action)
    if criteria.scope == "step_regions" and named:
        return tuple(named)
    regions = list(state.authority.regions) if state.authority else sorted(state.last_readings)
    for region in action_regions(record.action):
        if region not in regions:
            regions.append(region)
    return tuple(regions)


def criteria_for(state: IncidentState, action: ActionType) -> tuple[VerificationCriteria, str]:
    if state.authority is None:
        return VerificationCriteria(), "no authority declared: contract defaults"
    a = state.authority
    source = "action" if action in a.verification else "default"
    return a.criteria_for(action), f"runbook {a.name}@{a.version} ({source} criteria)"


def step_under_verification(state: IncidentState) -> DirectiveRecord | None:
    """The open (else last) consequential step that has run; else the latest one that ran."""
    for cid in (state.open_step, state.last_step):
        record = state.directives.get(cid or "")
        if record is not None and record.consequential and record.status in RAN:
            return record
    ran = [d for d in state.directives.values() if d.consequential and d.status in RAN]
    return max(ran, key=lambda d: d.issued_sequence) if ran else None


def pending(state: IncidentState) -> list[Job]:
    """Verifications due in this incident and not yet in the log, in log order."""
    if not state.opened or state.closed:
        return []
    jobs: list[Job] = []
    for record in sorted(state.directives.values(), key=lambda d: d.issued_sequence):
        if record.correlation_id in state.snapshot_correlations:
            continue
        if record.consequential and record.status in FINISHED:
            criteria, source = criteria_for(state, record.action.action)
            jobs.append(
                Job(
                    incident_id=state.incident_id,
                    trigger="step",
                    correlation_id=record.correlation_id,
                    step_correlation_id=record.correlation_id,
                    regions=regions_for(state, record, criteria),
                    criteria=criteria,
                    expected=expected_for(record),
                    step_time=record.finished_at,
                    criteria_source=source,
                )
            )
        elif isinstance(record.action, Verify) and record.status in VERIFY_DUE:
            step = step_under_verification(state)
            # An explicit verify re-judges the step under verification by that step's
            # criteria, unless the runbook declares criteria for `verify` itself.
            has_own = (
                state.authority is not None and ActionType.VERIFY in state.authority.verification
            )
            judged = ActionType.VERIFY if step is None or has_own else step.action.action
            criteria, source = criteria_for(state, judged)
            scope_of = step if step is not None and not record.action.regions else record
            jobs.append(
                Job(
                    incident_id=state.incident_id,
                    trigger="directive",
                    correlation_id=record.correlation_id,
                    step_correlation_id=step.correlation_id if step else None,
                    regions=regions_for(state, scope_of, criteria),
                    criteria=criteria,
                    expected=expected_for(step) if step else (),
                    step_time=None,
                    criteria_source=source,
                )
            )
    return jobs
