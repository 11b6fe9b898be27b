"""Recorded undo (pure): the inverse of a consequential step, computed from the target's
state read *before* the step, and the undo directive `conn direct undo` issues.

- disable_flag_rule  -> enable_flag_rule (the rule was enabled before)
- enable_flag_rule   -> disable_flag_rule (it was disabled before)
- drain_worker_pool  -> scale_worker_pool to the desired size before the drain
- scale_worker_pool  -> scale_worker_pool to the size before (drain_worker_pool if it was 0)
- restart_dependency_tier -> irreversible: a rollout restart has no inverse (the old
  pods are gone); the previous generation is recorded for the audit and the verifier.

An undo is an ordinary bounded directive: the same authority (the inverse action must
be granted), blast radius, one-step-at-a-time, freshness and verification apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from conn_core.state import DirectiveStatus, IncidentState
from conn_schemas.observations import FlagRuleState, TierState, WorkerPoolState
from conn_schemas.undo import RecordedUndo
from conn_schemas.values import (
    Action,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    RestartDependencyTier,
    ScaleWorkerPool,
    describe_action,
)

TargetState = FlagRuleState | WorkerPoolState | TierState


def planned_undo(action: Action) -> str | None:
    """What the executor will record as this step's undo, for the approver's decision
    packet (the exact inverse is read from the target just before acting). None: not a
    consequential action."""
    if isinstance(action, DisableFlagRule | EnableFlagRule):
        return (
            f"recorded before acting: rule {action.rule} of {action.flag} in {action.region} "
            "back to its state before (conn direct undo)"
        )
    if isinstance(action, DrainWorkerPool | ScaleWorkerPool):
        return (
            f"recorded before acting: pool {action.pool} in {action.region} scaled back to "
            "its size before (conn direct undo)"
        )
    if isinstance(action, RestartDependencyTier):
        return (
            f"none: a restart of {action.tier} in {action.region} cannot be undone "
            "(only the generation before it is recorded)"
        )
    return None


def undo_for(action: Action, before: TargetState | None) -> RecordedUndo | None:
    """The inverse of `action` given the target's state before it. None: not a
    consequential action. A missing or mismatched `before` is recorded as not undoable
    (no data is never a guess)."""
    if isinstance(action, DisableFlagRule | EnableFlagRule):
        if not isinstance(before, FlagRuleState) or (before.flag, before.rule, before.region) != (
            action.flag,
            action.rule,
            action.region,
        ):
            return _unreadable(action)
        state = "enabled" if before.enabled else "disabled"
        inverse: EnableFlagRule | DisableFlagRule = (
            EnableFlagRule(flag=action.flag, rule=action.rule, region=action.region)
            if before.enabled
            else DisableFlagRule(flag=action.flag, rule=action.rule, region=action.region)
        )
        return RecordedUndo(
            reversible=True,
            inverse=inverse,
            previous=f"rule {action.rule} of {action.flag} {state} in {action.region}",
            previous_enabled=before.enabled,
        )
    if isinstance(action, DrainWorkerPool | ScaleWorkerPool):
        if not isinstance(before, WorkerPoolState) or (before.pool, before.region) != (
            action.pool,
            action.region,
        ):
            return _unreadable(action)
        size = before.desired_replicas
        previous = f"pool {action.pool} desired {size} replicas in {action.region}"
        if size <= 0:
            if isinstance(action, DrainWorkerPool):
                return RecordedUndo(
                    reversible=False,
                    previous=previous,
                    previous_replicas=0,
                    detail="the pool was already at 0 replicas: nothing to restore",
                )
            return RecordedUndo(
                reversible=True,
                inverse=DrainWorkerPool(pool=action.pool, region=action.region),
                previous=previous,
                previous_replicas=0,
            )
        return RecordedUndo(
            reversible=True,
            inverse=ScaleWorkerPool(pool=action.pool, region=action.region, replicas=size),
            previous=previous,
            previous_replicas=size,
        )
    if isinstance(action, RestartDependencyTier):
        generation = (
            before.generation
            if isinstance(before, TierState)
            and (before.tier, before.region) == (action.tier, action.region)
            else None
        )
        return RecordedUndo(
            reversible=False,
            previous=(
                f"tier {action.tier} at generation {generation} in {action.region}"
                if generation is not None
                else f"tier {action.tier} in {action.region} (generation unreadable)"
            ),
            previous_generation=generation,
            detail="a rollout restart has no inverse: the replaced pods cannot be brought "
            "back; only the generation before it is recorded",
        )
    return None


def _unreadable(action: Action) -> RecordedUndo:
    return RecordedUndo(
        reversible=False,
        previous="unreadable",
        detail=f"the state before {describe_action(action)} could not be read: no undo "
        "is recorded (it would be a guess)",
    )


@dataclass(frozen=True)
class NoUndo:
    """Why a step cannot be undone (the API answers 409 with `code`)."""

    code: str
    detail: str


UNDOABLE = frozenset({DirectiveStatus.SUCCEEDED, DirectiveStatus.OUTCOME_UNKNOWN})
"""A step whose side effect ran (or may have): its recorded inverse may be issued."""


def undo_action(state: IncidentState, correlation_id: str) -> Action | NoUndo:
    """The recorded inverse of step `correlation_id`, or why there is none (pure)."""
    record = state.directives.get(correlation_id)
    if record is None:
        return NoUndo("not_found", f"no directive {correlation_id} in {state.incident_id}")
    if not record.consequential:
        return NoUndo("no_undo", f"{describe_action(record.action)} changed nothing to undo")
    if record.status not in UNDOABLE:
        return NoUndo(
            "no_undo",
            f"step {correlation_id} is {record.status.value}: only a step whose side effect "
            "ran (succeeded, or outcome unknown) can be undone",
        )
    undo = record.undo
    if undo is None:
        return NoUndo("no_undo", f"step {correlation_id} has no recorded undo")
    if not undo.reversible or undo.inverse is None:
        return NoUndo(
            "irreversible",
            f"step {correlation_id} is irreversible (before it: {undo.previous})"
            + (f": {undo.detail}" if undo.detail else ""),
        )
    for later in state.directives.values():
        if (
            later.issued_sequence > record.issued_sequence
            and later.action == undo.inverse
            and later.status is not DirectiveStatus.REFUSED
            and not later.not_started
        ):
            return NoUndo(
                "already_undone",
                f"{describe_action(undo.inverse)} was already directed after step "
                f"{correlation_id} (directive {later.correlation_id}, {later.status.value})",
            )
    return undo.inverse
