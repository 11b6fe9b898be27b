"""The bridge state of one incident, and the global control state.

These are what the fold (`conn_core.fold`) derives from the log. Every service
builds the same state from the same prefix of `conn.events`, which is what lets
the executor re-check a directive "against the log prefix at execution time".
The state is a plain dataclass owned by the fold that builds it; nothing else
mutates it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from pydantic import BaseModel

from conn_schemas.events import ControlPlaneCheck, RegionReadings
from conn_schemas.observations import ActionResult, MetricsReading, Observation
from conn_schemas.undo import RecordedUndo
from conn_schemas.values import (
    Action,
    Actor,
    AuthorityBoundary,
    ConnHolder,
    Expectation,
    HoldReason,
    RefusalReason,
    Verdict,
)

if TYPE_CHECKING:
    from conn_core.approvals import ApprovalTrack


class DirectiveStatus(StrEnum):
    ISSUED = "issued"  # in the log, not yet decided by the executor
    ACCEPTED = "accepted"
    REFUSED = "refused"
    STARTED = "started"  # side effect may be under way
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    OUTCOME_UNKNOWN = "outcome_unknown"


FINISHED = frozenset(
    {
        DirectiveStatus.REFUSED,
        DirectiveStatus.SUCCEEDED,
        DirectiveStatus.FAILED,
        DirectiveStatus.OUTCOME_UNKNOWN,
    }
)
"""A directive in one of these states is decided for good (nothing more will run)."""


@dataclass
class DirectiveRecord:
    correlation_id: str
    action: Action
    actor_id: str
    issued_sequence: int
    based_on_sequence: int
    consequential: bool
    expectation: Expectation | None = None
    status: DirectiveStatus = DirectiveStatus.ISSUED
    refusal: RefusalReason | None = None
    refusal_detail: str = ""
    verdict: Verdict | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: ActionResult | None = None
    """The StepSucceeded result (before/after of the target), for verification."""
    issuer: Actor | None = None
    """Who issued it (for re-checking it against later records)."""
    pre_step: Observation | None = None
    """The target as gathered just before the step (StateGathered, pre_step): what an
    unknown outcome is verified against (e.g. the tier generation before a restart)."""
    started_by: str | None = None
    """executor_id of the first StepStarted."""
    not_started: bool = False
    """Failed at the last gate: the side effect never began."""
    superseded_at: int | None = None
    """Position of the first record after this directive, not its own, that changed the
    incident's state while it had not finished (what the executor re-checks)."""
    superseded_by: str = ""
    """That record's event type."""
    undo: RecordedUndo | None = None
    """The inverse recorded in its StepStarted (before the side effect), if any."""

    @property
    def verified(self) -> bool:
        return self.verdict is Verdict.RECOVERED


@dataclass
class Hold:
    reason: HoldReason
    detail: str
    since_sequence: int
    correlation_id: str | None = None


@dataclass
class PacketRef:
    sha256: str
    to_team: str | None
    trigger: str
    sequence: int
    """Position of the TakeoverPacketPublished record."""
    basis: int = 0
    """The ledger position the packet describes (its content is the state there)."""


@dataclass
class AuthorityProposal:
    """A widening authority change waiting for (or given) a second person's approval."""

    proposal_id: str
    authority: AuthorityBoundary
    content_sha256: str
    base_sha256: str
    source_file: str
    proposer: str
    widenings: tuple[str, ...]
    proposed_sequence: int
    approved_by: str | None = None
    applied: bool = False


@dataclass
class IncidentState:
    incident_id: str
    sequence: int = 0
    """Number of this incident's events folded so far (the ledger position)."""
    opened: bool = False
    closed: bool = False
    title: str = ""
    service: str = ""
    opened_at: datetime | None = None
    authority: AuthorityBoundary | None = None
    authority_sha256: str | None = None
    holder: ConnHolder | None = None
    directives: dict[str, DirectiveRecord] = field(default_factory=dict)
    open_step: str | None = None
    """correlation_id of the consequential step issued and not yet verified/released."""
    last_step: str | None = None
    """correlation_id of the last consequential directive accepted."""
    state_changed_at: int = 0
    """Sequence of the last event that changes what a commander would base a directive on."""
    hold: Hold | None = None
    last_verdict: Verdict | None = None
    snapshot_correlations: set[str] = field(default_factory=set)
    """correlation_ids that already have a VerificationSnapshot (verify each once)."""
    last_readings: dict[str, MetricsReading] = field(default_factory=dict)
    drained_pools: dict[str, set[str]] = field(default_factory=dict)
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    consequential_steps: int = 0
    takeover_requested_to: str | None = None
    last_packet: PacketRef | None = None
    takeovers_accepted: int = 0
    holds_declared: int = 0
    refusals: dict[RefusalReason, int] = field(default_factory=dict)
    ignored_controls: int = 0
    """Control events in the log that the rules did not honour (e.g. injected)."""
    authority_source: str = ""
    """source_file of the declared authority (the runbook file)."""
    authority_proposals: dict[str, AuthorityProposal] = field(default_factory=dict)
    ignored_authority: int = 0
    """Authority records the rules did not honour (e.g. a widening without approval)."""
    packet_changed_at: int = 0
    """Position of the last record that changed what a takeover packet shows."""
    unfinished: set[str] = field(default_factory=set, repr=False)
    """correlation_ids issued and not finished (issued, accepted or started)."""
    conflicting_records: int = 0
    """Executor records that contradict an earlier one (a second decision, an outcome
    for a finished step): folded deterministically, the first one wins."""
    last_event_at: datetime | None = None
    seen_event_ids: set[UUID] = field(default_factory=set, repr=False)
    duplicate_events: int = 0
    """Records whose event_id had been folded before (ignored beyond their position)."""
    last_verification: dict[str, RegionReadings] = field(default_factory=dict)
    """Region -> its part of the latest VerificationSnapshot that covered it."""
    last_verification_at: dict[str, datetime] = field(default_factory=dict)
    """Region -> occurred_at of that snapshot."""
    last_control_plane: tuple[ControlPlaneCheck, ...] = ()
    """Control-plane checks of the latest VerificationSnapshot."""
    last_observation: Observation | None = None
    """The latest StateGathered observation (the evidence in a decision packet)."""
    approvals: dict[str, ApprovalTrack] = field(default_factory=dict)
    """correlation_id -> approvals of a directive that needs them (two-person rule)."""

    @property
    def on_hold(self) -> bool:
        return self.hold is not None

    def pending_directives(self) -> list[DirectiveRecord]:
        return [d for d in self.directives.values() if d.status is DirectiveStatus.ISSUED]

    def blocked_directives(self) -> list[DirectiveRecord]:
        return [d for d in self.directives.values() if d.status is DirectiveStatus.REFUSED]

    def unverified_changes(self) -> list[DirectiveRecord]:
        """Consequential steps started but not verified recovered (exact targets)."""
        return [
            d
            for d in self.directives.values()
            if d.consequential
            and d.status
            in (DirectiveStatus.STARTED, DirectiveStatus.SUCCEEDED, DirectiveStatus.OUTCOME_UNKNOWN)
            and not d.verified
        ]


@dataclass
class ControlState:
    """Global control: the kill switch (folded from `conn.control`)."""

    kill_switch: bool = False
    reason: str = ""
    changed_at: datetime | None = None
    changed_by: str | None = None
    seen_event_ids: set[UUID] = field(default_factory=set, repr=False)
    """A genuine control record re-published byte for byte (a replay, still correctly
    signed) changes nothing: an old KillSwitchReleased must not release a later engage."""
    duplicate_events: int = 0


# --- private copies ---------------------------------------------------------------------

_IMMUTABLE = (str, int, float, bytes, type(None), datetime, date, timedelta, UUID, Enum)
"""Values nothing can change in place (StrEnum members are str, bool is int)."""
_ATOM_TYPES: frozenset[type] = frozenset({str, int, float, bool, type(None), UUID, datetime})
"""The commonest of them, found by type (faster than `isinstance`)."""

S = TypeVar("S")


def private_copy(value: S) -> S:
    """A copy of a fold's state that shares nothing mutable with it: what
    `copy.deepcopy` gives, without copying what cannot change. Every container (dict,
    list, set, tuple) and every dataclass (`IncidentState`, `DirectiveRecord`, `Hold`,
    `ApprovalTrack`, ...) is copied; immutable values and frozen contract models (the
    actions, observations and results the fold took from events, which are shared with
    the events themselves already) are shared. Anything else falls back to
    `copy.deepcopy`. A handler that evolves or edits its copy never touches the live
    fold (tests/unit/test_state_private_copy.py)."""
    return _private(value)  # type: ignore[no-any-return]


def _private(value: Any) -> Any:
    kind = type(value)
    shared = _SHARED_TYPES.get(kind)
    if shared is None:
        shared = _SHARED_TYPES[kind] = _is_shared(kind)
    if shared:
        return value
    if kind is dict:
        return {k: _private(v) for k, v in value.items()}
    if kind is list:
        return [_private(v) for v in value]
    if kind is set:
        if all(type(v) in _ATOM_TYPES for v in value):  # ids, correlation ids
            return set(value)
        return {_private(v) for v in value}
    if kind is tuple or kind is frozenset:
        return kind(_private(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS.get(kind)
        if names is None:
            names = _FIELDS[kind] = tuple(f.name for f in fields(value))
        new = copy.copy(value)
        for name in names:
            field_value = getattr(value, name)
            if not _SHARED_TYPES.get(type(field_value), False):  # most fields: no call
                object.__setattr__(new, name, _private(field_value))
        return new
    return copy.deepcopy(value)


def _is_shared(kind: type) -> bool:
    """Immutable values and frozen pydantic models (the contract's `Frozen`)."""
    if issubclass(kind, _IMMUTABLE):
        return True
    return issubclass(kind, BaseModel) and bool(kind.model_config.get("frozen"))


_SHARED_TYPES: dict[type, bool] = dict.fromkeys(_ATOM_TYPES, True)
"""Type -> shared by a copy (`_is_shared`), learnt once per type."""
_FIELDS: dict[type, tuple[str, ...]] = {}
"""Field names per dataclass (`dataclasses.fields` is slow to ask every time)."""
