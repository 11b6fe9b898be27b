"""Recorded undo and dry-run previews (contract types).

`RecordedUndo` travels in `StepStarted.payload.undo`: the executor reads the target's
state from the adapter *before* acting and records the exact inverse of the step, so
`conn direct undo` can later issue it as a bounded directive of its own. A restart has
no true inverse (pods cannot be "un-restarted"): its undo records the previous
generation and is marked irreversible.

`ChangePreview` is what a dry run answers: the exact change an adapter would make
(a server-side dry run where the target supports it, a computed diff otherwise). It
is never written to the event log.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from conn_schemas.values import (
    Action,
    Detail,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    Frozen,
    Line,
    ScaleWorkerPool,
)

UndoAction = Annotated[
    EnableFlagRule | DisableFlagRule | ScaleWorkerPool | DrainWorkerPool,
    Field(discriminator="action"),
]
"""The bounded actions an undo can be (each one the inverse of another)."""


class RecordedUndo(Frozen):
    """The inverse of one consequential step, recorded before its side effect."""

    reversible: bool = Field(description="False: the step has no inverse (e.g. a restart)")
    inverse: UndoAction | None = Field(
        default=None, description="The bounded action that restores the previous state"
    )
    previous: Line = Field(description="The previous state, for humans (e.g. 'desired 3 replicas')")
    previous_enabled: bool | None = Field(default=None, description="Flag rule, before")
    previous_replicas: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="Pool size, before"
    )
    previous_generation: int | None = Field(
        default=None, ge=0, le=2**62, description="Tier, before"
    )
    detail: Detail = ""

    @model_validator(mode="after")
    def _inverse_iff_reversible(self) -> RecordedUndo:
        if self.reversible != (self.inverse is not None):
            raise ValueError("an undo is reversible exactly when it records an inverse")
        return self


class FieldChange(Frozen):
    path: str = Field(max_length=200)
    before: Any = None
    after: Any = None


class ChangePreview(Frozen):
    """The exact change a consequential action would make, asked of the target
    without changing it."""

    action: Action
    method: Literal["server_dry_run", "computed_diff"]
    target: str = Field(description="What the adapter would write (e.g. 'ns/deployment')")
    would_change: bool
    changes: tuple[FieldChange, ...] = ()
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""
