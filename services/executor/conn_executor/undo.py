"""Recording the undo of a step: read the target from its adapter *before* acting and
compute the inverse (`conn_core.undo.undo_for`). Reads only; a failed read records
"not undoable" (never a guess) and does not stop the step: the pre-step gather has
already judged the target, and the undo is an aid, not a precondition."""

from __future__ import annotations

import asyncio
import logging

from conn_adapters.config import Adapters
from conn_core.ports import ActionResult, PortError
from conn_core.undo import TargetState, undo_for
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
    adapters: Adapters, action: Action, read_within: float
) -> RecordedUndo | None:
    """The step's inverse from the target's state read now (before the side effect)."""
    if action.action not in CONSEQUENTIAL_ACTIONS:
        return None
    before: TargetState | None = None
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
