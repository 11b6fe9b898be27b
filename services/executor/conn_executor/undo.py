"""Recording the undo of a step: the target's state *before* acting and its inverse
(`conn_core.undo.undo_for`). The state is the one the pre-step gather read from the
target's adapter and recorded (StateGathered, pre_step) in the same handling, before
StepStarted and the gate — so the undo and the pre-step record agree, at no second read;
when that gather has no reading of the target, it is read now. Reads only; a failed read
records "not undoable" (never a guess) and does not stop the step: the pre-step gather
has already judged the target, and the undo is an aid, not a precondition."""

from __future__ import annotations

import asyncio
import logging

from conn_adapters.config import Adapters
from conn_core.ports import ActionResult, PortError
from conn_core.rules import observed_target
from conn_core.undo import TargetState, undo_for
from conn_schemas.observations import Observation
from conn_schemas.undo import RecordedUndo
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    Action,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    RestartDependencyTier,
    ScaleWorkerPool,
)

log = logging.getLogger(__name__)


async def read_before(adapters: Adapters, action: Action) -> TargetState | None:
    if isinstance(action, DisableFlagRule | EnableFlagRule):
        return await adapters.flags.get_rule(action.flag, action.rule, action.region)
    if isinstance(action, DrainWorkerPool | ScaleWorkerPool):
        return await adapters.orchestrator.get_pool(action.pool, action.region)
    if isinstance(action, RestartDependencyTier):
        return await adapters.orchestrator.get_tier(action.tier, action.region)
    return None


async def record_undo(
    adapters: Adapters,
    action: Action,
    read_within: float,
    *,
    gathered: Observation | None = None,
) -> RecordedUndo | None:
    """The step's inverse from the target's state before the side effect: as `gathered`
    (the pre-step gather of this handling) holds it, else read now."""
    if action.action not in CONSEQUENTIAL_ACTIONS:
        return None
    before = None if gathered is None else observed_target(gathered, action)
    if before is not None:
        return undo_for(action, before)
    try:
        async with asyncio.timeout(read_within):
            before = await read_before(adapters, action)
    except (PortError, TimeoutError) as exc:
        log.warning(
            "state before the step unreadable: no undo recorded",
            extra={"action": action.action.value, "error": str(exc)[:300]},
        )
    return undo_for(action, before)


async def act(adapters: Adapters, action: Action, key: str) -> ActionResult:
    """The inverse actions' side effects (the original three stay in the service)."""
    if isinstance(action, EnableFlagRule):
        return await adapters.flags.enable_rule(
            action.flag, action.rule, action.region, idempotency_key=key
        )
    if isinstance(action, ScaleWorkerPool):
        return await adapters.orchestrator.scale_pool(
            action.pool, action.region, action.replicas, idempotency_key=key
        )
    raise PortError(f"{action.action.value} is not a side effect", rejected=True)
