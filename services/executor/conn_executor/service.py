"""The executor's consume shell: consume, decide, act through an adapter, append.

It decides each DirectiveIssued against the log prefix before it, gathers live
state, re-checks it against everything its partition holds right before acting,
claims the step, records intent, passes a fenced gate, acts once, records the
outcome; a call that times out or is interrupted, and a step left unfinished by a
crash or a rebalance, is re-gathered and reported as StepOutcomeUnknown — never
re-run, never reported as failed.

The step's life cycle is the pure state machine in `conn_executor.steps` (phases and
transitions) and `conn_executor.lifecycle` (the claim, and what to do with one left
unfinished); this module does the I/O between transitions and carries out what
each one returns. Handlers never carry the live fold across an await: they read it
at the record and work on a snapshot (a private copy).

Events appended per directive (correlation_id = the directive's):

- refused:            DirectiveRefused(refused_by="executor")
- consequential:      StateGathered(pre_step) -> DirectiveRefused (conflict/partial state:
                      the fold derives a hold; or a re-check against the latest record
                      refuses it) | DirectiveAccepted -> StepStarted ->
                      StepSucceeded | StepFailed | StepFailed(not_started: a re-check or
                      a stop at the gate) | StepOutcomeUnknown (timed out / interrupted)
                      -> IncidentRecordUpdated
- gather_state:       DirectiveAccepted -> StateGathered(directed)
- verify:             DirectiveAccepted (the verifier reacts to it)
- update_incident_record: (re-check) DirectiveAccepted -> IncidentRecordUpdated
- recovered step:     StepOutcomeUnknown(observation) | StepFailed(not_started)
                      -> IncidentRecordUpdated
- given up:           the handler kept failing (a bug, not an outage) and the runtime
                      dead-lettered the record (`handle_failed`): recovered as above
                      without re-running or re-deciding anything — past the gate
                      StepOutcomeUnknown, before it StepFailed(not_started), nothing
                      recorded yet DirectiveRefused
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

import asyncpg
from aiokafka import TopicPartition

from conn_adapters.config import Adapters, AdapterSettings, build_adapters
from conn_core import approvals
from conn_core.fold import evolve
from conn_core.ports import PortError
from conn_core.rules import (
    Accepted,
    Refused,
    check_control,
    check_observation,
    decide,
    recheck,
)
from conn_core.state import DirectiveRecord, DirectiveStatus, IncidentState, private_copy
from conn_executor import metrics as m
from conn_executor import steps
from conn_executor.claims import CLAIMS_DDL, CLAIMS_LOCK_KEY, Claim, ClaimStatus, ClaimStore
from conn_executor.containment import Containment
from conn_executor.gather import Gatherer, plan_for_outcome, plan_for_regions, plan_for_step
from conn_executor.lifecycle import LOG_OUTCOME, Recovery, recovery
from conn_executor.lookahead import LookAhead
from conn_executor.redact import failure_summary, scrub, step_summary, unknown_summary
from conn_executor.settings import ExecutorSettings
from conn_executor.steps import CallError, Phase, Stop
from conn_executor.undo import act as act_inverse
from conn_executor.undo import record_undo
from conn_runtime import db, stops
from conn_runtime.kafka import Consumed, Position
from conn_runtime.resilience import POSTGRES, describe_failure, retry
from conn_runtime.service import ConsumerService
from conn_runtime.settings import DatabaseSettings, KafkaSettings
from conn_runtime.stops import GLOBAL_SCOPE, active_stop
from conn_schemas.events import (
    ApprovalDeclined,
    ApprovalRecorded,
    DirectiveAccepted,
    DirectiveAcceptedPayload,
    DirectiveIssued,
    DirectiveIssuedPayload,
    DirectiveRefused,
    DirectiveRefusedPayload,
    Envelope,
    HoldDeclared,
    IncidentRecordUpdated,
    IncidentRecordUpdatedPayload,
    KillSwitchEngaged,
    StateGathered,
    StateGatheredPayload,
    StepFailed,
    StepFailedPayload,
    StepOutcomeUnknown,
    StepOutcomeUnknownPayload,
    StepStarted,
    StepStartedPayload,
    StepSucceeded,
    StepSucceededPayload,
    new_event,
)
from conn_schemas.observations import ActionResult, Observation
from conn_schemas.signing import SignerRole
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    MAX_DETAIL,
    MAX_MACHINE_TEXT,
    READ_ONLY_ACTIONS,
    Action,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    EnableFlagRule,
    Expectation,
    Frozen,
    GatherState,
    RefusalReason,
    RestartDependencyTier,
    ScaleWorkerPool,
    UpdateIncidentRecord,
    Verify,
    clean_text,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


APPROVAL_SWEEP_SECONDS = 5.0
"""How often the executor cancels directives whose approval window closed."""


def _now() -> datetime:
    return datetime.now(UTC)


def _snapshot(state: IncidentState) -> IncidentState:
    """A private copy of a fold, for a handler to work on across awaits: the live fold
    belongs to the runtime, which moves it on after the handler (and the control
    consumer and the approval sweep run meanwhile). `private_copy`: what a deep copy
    gives, sharing only the frozen contract models (the events' own parts)."""
    return private_copy(state)


class Entry(StrEnum):
    """How a step was taken up (what the executor knows about the log before it)."""

    LIVE = "live"
    """Its DirectiveIssued record, handled live: the log prefix before it is at hand."""
    APPROVED = "approved"
    """Taken up again by the approval that completed its quorum (two-person rule)."""
    RESTARTED = "restarted"
    """Found open after history was re-read (a crash, a rebalance): the prefix before
    the directive is not at hand, so it is never decided on it."""


@dataclass(frozen=True)
class StopRead:
    """What the stops table held when it was read (`stop` None: no stop engaged)."""

    stop: stops.Stop | None


@dataclass
class Step:
    """One directive being handled: who, what, where it sits in the log, and the
    shell's bookkeeping (causation chain, look-ahead view, phase)."""

    correlation_id: str
    incident_id: str
    payload: DirectiveIssuedPayload
    cause: str | None
    position: Position
    generation: int
    entry: Entry
    view: IncidentState
    """The incident folded through the directive and everything read after it (a
    snapshot: the live fold is never touched)."""
    view_next: int
    """Offset of the partition to continue the look-ahead from."""
    issuer: Actor | None = None
    prefix: IncidentState | None = None
    """A snapshot of the log before the directive (LIVE steps only): what `decide` sees."""
    phase: Phase = Phase.CLAIMED
    """Where the step is in `conn_executor.steps` (moved only along its transitions)."""
    pre_step: Observation | None = None
    """What this handling's pre-step gather read (and recorded) before StepStarted: the
    undo's state before the step, without a second read of the target."""
    stop_at_claim: StopRead | None = None
    """The stops table as the claim's own statement read it (LIVE steps): what the
    decision right after the claim checks, instead of a second query. Never the check
    before the side effect (that is the gate)."""

    @property
    def action(self) -> Action:
        return self.payload.action

    @property
    def expectation(self) -> Expectation | None:
        return self.payload.expectation

    @property
    def consequential(self) -> bool:
        return self.action.action in CONSEQUENTIAL_ACTIONS


class ExecutorService(ConsumerService):
    name = "executor"
    role = SignerRole.EXECUTOR

    def __init__(
        self,
        kafka: KafkaSettings,
        database: DatabaseSettings,
        adapter_settings: AdapterSettings,
        settings: ExecutorSettings,
        *,
        adapters: Adapters | None = None,
    ) -> None:
        super().__init__(
            kafka,
            group_id=settings.group_id,
            ops_host=settings.metrics_host,
            ops_port=settings.metrics_port,
            max_in_flight=settings.max_in_flight,
        )
        self.settings = settings
        self.database = database
        self.adapter_settings = adapter_settings
        self.faults = settings.faults
        self._adapters = adapters
        self._pool: asyncpg.Pool | None = None
        self._claims: ClaimStore | None = None
        self._gatherer: Gatherer | None = None
        self.lookahead = LookAhead(kafka, name=settings.id)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.containment = Containment()
        self._sweeper: asyncio.Task[None] | None = None
        self.deps.add(POSTGRES, db.postgres_probe(database.database_url, lambda: self._pool))
        if self.faults.any:
            log.warning("TEST FAULT INJECTION ACTIVE", extra={"fault": settings.fault})

    # -- lifecycle -------------------------------------------------------------------

    @property
    def adapters(self) -> Adapters:
        assert self._adapters is not None, "setup() has not run"
        return self._adapters

    @property
    def claims(self) -> ClaimStore:
        assert self._claims is not None, "setup() has not run"
        return self._claims

    @property
    def gatherer(self) -> Gatherer:
        assert self._gatherer is not None, "setup() has not run"
        return self._gatherer

    async def _persist(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Run a PostgreSQL statement that is safe to repeat, waiting out an outage."""
        return await retry(
            call, what=what, deps=self.deps, dependency=POSTGRES, stopping=self.loop.stopping
        )

    async def setup(self) -> None:
        """Safe to repeat after a failure (the service retries it while PostgreSQL or
        Kafka is away at start-up)."""
        if self._pool is None:
            # No session state is ever left on these connections (plain statements; the
            # schema's advisory lock is transaction-level): no reset round trip per release.
            self._pool = await db.create_pool(self.database.database_url, reset_session=False)
        for attempt in range(3):
            try:
                await db.apply_schema(self._pool, CLAIMS_DDL, lock_key=CLAIMS_LOCK_KEY)
                break
            except asyncpg.UniqueViolationError:
                # Another service created a shared table (conn_stops) at the same moment.
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)
        await stops.ensure_table(self._pool)
        self._claims = ClaimStore(self._pool, persist=self._persist)
        if self._adapters is None:
            self._adapters = build_adapters(self.adapter_settings)
        a = self._adapters
        self._gatherer = Gatherer(a.flags, a.orchestrator, a.metrics, self.settings.gather_timeout)
        await self.lookahead.start()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_expired(), name="approval-expiry")
        log.info(
            "executor ready",
            extra={"executor_id": self.settings.id, "group": self.settings.group_id},
        )

    async def teardown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.lookahead.stop()
        if self._adapters is not None:
            await self._adapters.aclose()
        if self._pool is not None:
            await self._pool.close()

    # -- consuming -------------------------------------------------------------------

    async def handle(self, consumed: Consumed, before: IncidentState) -> None:
        """`before` is the runtime's live fold: read here, at the record, and never
        carried across an await (what a handler keeps is a snapshot of it)."""
        event = consumed.event
        if isinstance(event, DirectiveIssued):
            await self._on_directive(consumed, event, before)
            return
        if isinstance(event, HoldDeclared) and check_control(before, event) is None:
            self.containment.stop_seen("hold", event.incident_id, event.occurred_at)
        if approvals.awaiting(before):
            await self._on_awaiting(consumed, before)

    async def handle_failed(
        self, consumed: Consumed, before: IncidentState, error: Exception
    ) -> None:
        """The runtime gave up on this record: `handle` kept failing on it for a reason
        that is not an outage (dead-lettered as `handler_failed`). A directive it was
        running (its DirectiveIssued, or the approval that completed its quorum) must
        not be left open: its claim is taken over (fenced) and closed with the outcome
        `given_up` says — never re-run, never decided again."""
        event = consumed.event
        cid = event.correlation_id
        if cid is None or not isinstance(event, DirectiveIssued | ApprovalRecorded):
            return
        if isinstance(event, DirectiveIssued) == (cid in before.directives):
            return  # a directive's copy (decided from the first), or an approval of nothing
        state = _snapshot(before)  # read at the record
        if isinstance(event, DirectiveIssued):
            evolve(state, event)
            if cid not in state.directives:
                return  # the fold ignores it (e.g. no incident open): nothing to answer
        error_text = scrub(describe_failure(error))
        async with self._locks[event.incident_id]:
            claim = await self.claims.get(cid)
            if claim is None and isinstance(event, DirectiveIssued):
                # It failed before (or while) it was claimed: claim it, to refuse it.
                claim, _ = await self.claims.claim_reading_stop(
                    correlation_id=cid,
                    incident_id=event.incident_id,
                    action=event.payload.action.action.value,
                    topic=consumed.position.topic,
                    partition=consumed.position.partition,
                    offset=consumed.position.offset,
                    generation=self._fencing_token(),
                    executor_id=self.settings.id,
                )
            if claim is None or claim.final:
                return
            step = self._recorded_step(
                state,
                cid,
                claim,
                str(event.event_id),
                entry=Entry.RESTARTED,
                view=state,
                view_next=consumed.position.offset + 1,
            )
            record = (await self._look(step)).directives[cid]
            step.generation = self._fencing_token()
            owned = await self.claims.take_over(
                cid, generation=step.generation, executor_id=self.settings.id
            )
            if owned is None:
                m.DIRECTIVES.labels("fenced", "claim_held_elsewhere").inc()
                return
            action = recovery(record.status, owned.status, prefix_known=False)
            log.error(
                "directive handling failed; closing it without re-running",
                extra={**_claim_log(owned), "recovery": action, "error": error_text},
            )
            step.phase = steps.RESUMED_AT[action]
            await self._apply(step, given_up(action, error_text))

    async def on_control(self, consumed: Consumed) -> None:
        event = consumed.event
        if isinstance(event, KillSwitchEngaged):
            log.warning("kill switch engaged", extra={"reason": event.payload.reason})
            self.containment.stop_seen("kill_switch", GLOBAL_SCOPE, event.occurred_at)
            # The kill switch cancels every directive waiting for approvers (recorded).
            refusal = Refused(
                RefusalReason.KILL_SWITCH,
                f"global kill switch engaged: {event.payload.reason}; cancelled while "
                "waiting for approval",
            )
            for state in list(self.folds.states.values()):
                for cid in approvals.awaiting(state):
                    async with self._locks[state.incident_id]:
                        await self._cancel(
                            _snapshot(state), cid, refusal, cause=str(event.event_id)
                        )

    def _fencing_token(self) -> int:
        """The fencing token of every claim and StepStarted: the consumer group's
        generation, which a rebalance bumps, so an executor that lost its partitions
        (a zombie still finishing a handler) holds an older token than the new owner.
        aiokafka has no public accessor for it (Kafka's Java client has
        `groupMetadata().generationId()`): `EventLoop.generation()` is the runtime's one
        isolated read of the group coordinator's, and this is the executor's one call."""
        return self.loop.generation()

    # -- the two-person rule -----------------------------------------------------------

    async def _on_awaiting(self, consumed: Consumed, before: IncidentState) -> None:
        """A record landed on an incident with directives waiting for approvers: the
        approval that completes a quorum runs it (re-checked like any directive); a
        decline, a hold, a takeover, an expiry or any newer state change cancels it
        (DirectiveRefused, with the reason)."""
        event = consumed.event
        waiting = approvals.awaiting(before)  # read at the record; then only the snapshot
        after = _snapshot(before)
        evolve(after, event)
        now = _now()
        for cid in waiting:
            record = after.directives[cid]
            track = after.approvals[cid]
            if record.status is not DirectiveStatus.ISSUED:
                continue  # decided by this very record (e.g. a refusal elsewhere)
            if isinstance(event, ApprovalRecorded) and event.correlation_id == cid and track.quorum:
                if track.quorum_at is not None:
                    m.TIME_TO_APPROVAL.labels(record.action.action.value).observe(
                        max(0.0, (track.quorum_at - track.issued_at).total_seconds())
                    )
                m.APPROVALS.labels("approved", "quorum").inc()
                async with self._locks[event.incident_id]:
                    await self._run_approved(consumed, after, cid)
                continue
            refusal = recheck(
                after, cid, self.folds.control, executor_id=self.settings.id, owns_claim=True
            ) or approvals.gate(after, cid, now)
            if refusal is None or refusal.reason in (
                RefusalReason.APPROVAL_REQUIRED,
                RefusalReason.DUPLICATE,
            ):
                if isinstance(event, ApprovalRecorded | ApprovalDeclined):
                    m.APPROVALS.labels("awaiting", "vote").inc()
                continue
            async with self._locks[event.incident_id]:
                await self._cancel(
                    after,
                    cid,
                    Refused(
                        refusal.reason, f"cancelled while waiting for approval: {refusal.detail}"
                    ),
                    cause=str(event.event_id),
                )

    def _recorded_step(
        self,
        state: IncidentState,
        cid: str,
        claim: Claim,
        cause: str | None,
        *,
        entry: Entry,
        view: IncidentState,
        view_next: int,
        phase: Phase = Phase.CLAIMED,
    ) -> Step:
        """The step of a directive already in the log (taken up from its claim)."""
        record = state.directives[cid]
        return Step(
            correlation_id=cid,
            incident_id=state.incident_id,
            payload=DirectiveIssuedPayload(
                action=record.action,
                expectation=record.expectation,
                based_on_sequence=record.based_on_sequence,
            ),
            cause=cause,
            position=Position(claim.topic, claim.partition, claim.directive_offset),
            generation=self._fencing_token(),
            entry=entry,
            view=view,
            view_next=view_next,
            issuer=record.issuer,
            phase=phase,
        )

    async def _sweep_expired(self) -> None:
        """Directives whose approval window closed with no quorum are cancelled with
        `approval_expired` even when nothing else lands on their incident."""
        while True:
            await asyncio.sleep(APPROVAL_SWEEP_SECONDS)
            try:
                now = _now()
                for state in list(self.folds.states.values()):
                    for cid in approvals.awaiting(state):
                        if now <= state.approvals[cid].expires_at:
                            continue
                        async with self._locks[state.incident_id]:
                            refusal = approvals.gate(state, cid, now)
                            if refusal is None or (
                                refusal.reason is not RefusalReason.APPROVAL_EXPIRED
                            ):
                                continue
                            await self._cancel(
                                _snapshot(state),
                                cid,
                                Refused(
                                    refusal.reason,
                                    f"cancelled while waiting for approval: {refusal.detail}",
                                ),
                                cause=None,
                            )
            except Exception:  # the sweep must outlive one bad pass
                log.exception("approval expiry sweep failed; retrying")

    async def _take_up_awaiting(
        self, state: IncidentState, cid: str, cause: str | None, *, read_from: int | None
    ) -> tuple[Step, Claim | None] | None:
        """Take over the claim of a directive that was waiting for approvers (taken when
        it was issued). None if it is gone or final; else the step (its view a snapshot
        of `state`, read ahead from `read_from`, default: right after the directive)
        and the claim as it was before the take-over (None: fenced off)."""
        claim = await self.claims.get(cid)
        if claim is None or claim.final:
            return None
        step = self._recorded_step(
            state,
            cid,
            claim,
            cause,
            entry=Entry.APPROVED,
            view=_snapshot(state),
            view_next=claim.directive_offset + 1 if read_from is None else read_from,
            phase=Phase.AWAITING_APPROVAL,
        )
        owned = await self.claims.take_over(
            cid, generation=step.generation, executor_id=self.settings.id
        )
        return step, owned

    async def _cancel(
        self, state: IncidentState, cid: str, refusal: Refused, *, cause: str | None
    ) -> None:
        """Record why a directive waiting for approvers will never run (its claim is
        closed as refused; fenced like any claim). `state` is a snapshot."""
        taken = await self._take_up_awaiting(state, cid, cause, read_from=None)
        if taken is None:
            return
        step, owned = taken
        if owned is None or owned.status is not ClaimStatus.CLAIMED:
            return
        await self._apply(step, steps.Refuse(refusal))
        m.APPROVALS.labels(
            "declined" if refusal.reason is RefusalReason.APPROVAL_DECLINED else "cancelled",
            refusal.reason.value,
        ).inc()

    async def _run_approved(self, consumed: Consumed, after: IncidentState, cid: str) -> None:
        """The quorum is in the log: take the directive's claim up again and run it,
        re-checked against everything the partition holds (like any directive).
        `after` is a snapshot."""
        taken = await self._take_up_awaiting(
            after, cid, str(consumed.event.event_id), read_from=consumed.position.offset + 1
        )
        if taken is None:
            return
        step, owned = taken
        if owned is None:
            m.DIRECTIVES.labels("fenced", "claim_held_elsewhere").inc()
            return
        if owned.status is not ClaimStatus.CLAIMED:
            # Started before a crash: recover as any claim (never re-run blindly).
            await self._resume(step, owned, after.directives[cid])
            return
        step.phase = steps.moved(step.phase, Phase.CLAIMED)  # the quorum: taken up again
        await self._approved_path(step)

    async def _approved_path(self, step: Step) -> None:
        """CLAIMED, taken up by its quorum: stops, the picture now, the target's live
        state and the picture again, then accepted and run."""
        if not await self._apply(
            step, steps.stopped(step.phase, await self._stop_signal(step.incident_id, step.view))
        ):
            return
        if not await self._apply(
            step, steps.rechecked(step.phase, await self._recheck(step, "approved"))
        ):
            return
        if not await self._apply(
            step, steps.gathered(step.phase, await self._gather_before_step(step))
        ):
            return
        if not await self._apply(
            step, steps.rechecked(step.phase, await self._recheck(step, "before_accept"))
        ):
            return
        await self._accept(step, step.view.sequence)
        await self._execute_step(step)

    async def on_caught_up(self, partitions: set[TopicPartition]) -> None:
        """History re-read after an assignment: finish what a previous owner left open
        below the committed offset (records above it are redelivered and handled live)."""
        ours = sorted(tp.partition for tp in partitions if tp.topic == self.topics.events)
        if not ours:
            return
        self.lookahead.warm(self.topics.events, ours)  # in the background
        for claim in await self.claims.open_claims(self.topics.events, ours):
            tp = TopicPartition(claim.topic, claim.partition)
            committed = await self.loop.consumer.committed(tp) or 0
            if claim.directive_offset >= committed:
                continue  # will be redelivered; the live path recovers it with its prefix
            state = self.folds.states.get(claim.incident_id)
            if state is None or claim.correlation_id not in state.directives:
                log.warning("open claim with no directive in the log", extra=_claim_log(claim))
                continue
            async with self._locks[claim.incident_id]:
                after = _snapshot(state)
                ahead, end = await self.lookahead.read_to_end(
                    claim.topic, claim.partition, committed, claim.incident_id
                )
                for e in ahead:
                    evolve(after, e)
                record = after.directives[claim.correlation_id]
                if claim.correlation_id in approvals.awaiting(after):
                    # Waiting for approvers: the approval takes it up; cancel it now if a
                    # stop or a change landed while no executor was watching.
                    refusal = recheck(
                        after, claim.correlation_id, self.folds.control, owns_claim=True
                    ) or approvals.gate(after, claim.correlation_id, _now())
                    if refusal is not None and refusal.reason not in (
                        RefusalReason.APPROVAL_REQUIRED,
                        RefusalReason.DUPLICATE,
                    ):
                        await self._cancel(after, claim.correlation_id, refusal, cause=None)
                    continue
                step = self._recorded_step(
                    after,
                    claim.correlation_id,
                    claim,
                    None,
                    entry=Entry.RESTARTED,
                    view=after,
                    view_next=end,
                )
                await self._resume(step, claim, record)

    # -- directives ------------------------------------------------------------------

    async def _on_directive(
        self, consumed: Consumed, event: DirectiveIssued, before: IncidentState
    ) -> None:
        cid = event.correlation_id
        extra = {"incident_id": event.incident_id, "correlation_id": cid}
        if cid is None:
            m.DIRECTIVES.labels("ignored", "no_correlation_id").inc()
            log.warning("DirectiveIssued without a correlation_id ignored", extra=extra)
            return
        if cid in before.directives:
            # Replayed by hand (or produced twice): already decided from the first copy.
            m.DIRECTIVES.labels("duplicate", "correlation_id_seen").inc()
            log.info("duplicate directive ignored", extra=extra)
            return
        prefix = _snapshot(before)
        view = _snapshot(prefix)  # through the directive, to read ahead from
        evolve(view, event)
        step = Step(
            correlation_id=cid,
            incident_id=event.incident_id,
            payload=event.payload,
            cause=str(event.event_id),
            position=consumed.position,
            generation=self._fencing_token(),
            entry=Entry.LIVE,
            view=view,
            view_next=consumed.position.offset + 1,
            issuer=event.actor,
            prefix=prefix,
        )
        async with self._locks[event.incident_id]:
            claim, stop = await self.claims.claim_reading_stop(
                correlation_id=cid,
                incident_id=event.incident_id,
                action=event.payload.action.action.value,
                topic=consumed.position.topic,
                partition=consumed.position.partition,
                offset=consumed.position.offset,
                generation=step.generation,
                executor_id=self.settings.id,
            )
            if claim is not None:
                step.stop_at_claim = StopRead(stop)
                await self._decide_and_run(step)
                return
            await self._redelivered(step)

    async def _look(self, step: Step) -> IncidentState:
        """Bring the step's view up to the latest record of its partition."""
        started = time.perf_counter()
        ahead, end = await self.lookahead.read_to_end(
            step.position.topic, step.position.partition, step.view_next, step.incident_id
        )
        m.LOOKAHEAD_SECONDS.observe(time.perf_counter() - started)
        for e in ahead:
            evolve(step.view, e)
        step.view_next = max(step.view_next, end)
        return step.view

    async def _recheck(self, step: Step, stage: str) -> Refused | None:
        """Decide again at the moment of acting: on everything the log holds now."""
        state = await self._look(step)
        # We hold the claim (fresh, or taken over): the fenced gate decides who acts.
        refusal = recheck(
            state,
            step.correlation_id,
            self.folds.control,
            executor_id=self.settings.id,
            owns_claim=True,
        ) or approvals.gate(state, step.correlation_id, _now())
        m.RECHECKS.labels(stage, refusal.reason.value if refusal else "ok").inc()
        if refusal is not None:
            log.info(
                "directive refused by the re-check against the latest record",
                extra={**_step_log(step), "stage": stage, "reason": refusal.reason.value},
            )
        return refusal

    async def _decided_elsewhere(self, step: Step, detail: str) -> None:
        """The log already has this directive finished by another executor (we lost
        the claim, e.g. paused past our session timeout; or one that lost it wrote a
        refusal first): add nothing to the log, and close the claim to match the log
        if it is still ours (fenced: otherwise its owner does)."""
        m.DIRECTIVES.labels("fenced", "decided_elsewhere").inc()
        log.warning(
            "directive finished in the log by another executor; not acting",
            extra={**_step_log(step), "detail": detail},
        )
        record = step.view.directives.get(step.correlation_id)
        if record is not None and record.status in LOG_OUTCOME:
            await self.claims.finish(
                step.correlation_id,
                LOG_OUTCOME[record.status],
                detail,
                generation=step.generation,
                executor_id=self.settings.id,
            )

    async def _redelivered(self, step: Step) -> None:
        """The claim exists: this record was handled (at least partly) before a crash,
        a rebalance or a failed attempt. Read what was appended after it, then finish."""
        claim = await self.claims.get(step.correlation_id)
        if claim is None:
            raise RuntimeError(f"claim {step.correlation_id} vanished")
        if claim.final:
            m.DIRECTIVES.labels("redelivered", claim.status.value).inc()
            return
        state = await self._look(step)
        await self._resume(step, claim, state.directives[step.correlation_id])

    async def _resume(self, step: Step, claim: Claim, record: DirectiveRecord) -> None:
        """Finish a claim left open, as `lifecycle.recovery` says, after taking it
        over (fenced: a newer owner wins, the old one can no longer move it). Only a
        LIVE step has the log prefix before its directive to decide on."""
        prefix_known = step.entry is Entry.LIVE
        action = recovery(record.status, claim.status, prefix_known=prefix_known)
        extra = {**_claim_log(claim), "log_status": record.status.value, "recovery": action}
        step.generation = self._fencing_token()
        owned = await self.claims.take_over(
            step.correlation_id, generation=step.generation, executor_id=self.settings.id
        )
        if owned is None:
            m.DIRECTIVES.labels("fenced", "claim_held_elsewhere").inc()
            log.warning("claim held by another executor; not taken over", extra=extra)
            return
        if owned.status is not claim.status:
            # It moved between our read and the take-over: decide on what it is now.
            action = recovery(record.status, owned.status, prefix_known=prefix_known)
        if owned.executor_id != self.settings.id:
            m.RECOVERIES.labels("taken_over").inc()
        log.info("resuming an unfinished claim", extra=extra)
        step.phase = steps.RESUMED_AT[action]
        result = steps.resumed(action, owner=owned.executor_id, generation=owned.generation)
        if isinstance(result, steps.Elsewhere):
            # The log has the outcome (ours before a crash, or another's): close the claim.
            step.phase = steps.advance(step.phase, result)
            await self._finish(step, LOG_OUTCOME[record.status])
            m.RECOVERIES.labels("already_recorded").inc()
            return
        if not await self._apply(step, result):
            return
        if step.phase is Phase.ACCEPTED:
            await self._continue_accepted(step)
        elif step.entry is Entry.APPROVED:
            await self._approved_path(step)
        else:
            await self._decide_and_run(step)

    async def _continue_accepted(self, step: Step) -> None:
        """ACCEPTED, never started (taken up after a crash): checked again, then run."""
        if not step.consequential:
            if step.action.action not in READ_ONLY_ACTIONS and not await self._apply(
                step, steps.rechecked(step.phase, await self._recheck(step, "before_accept"))
            ):
                return
            await self._run_non_consequential(step, step.view, accepted=True)
            return
        if not await self._apply(
            step, steps.stopped(step.phase, await self._stop_signal(step.incident_id, step.view))
        ):
            return
        if not await self._apply(
            step, steps.gathered(step.phase, await self._gather_before_step(step))
        ):
            return
        await self._execute_step(step)

    async def _gather_before_step(self, step: Step) -> Refused | None:
        """Read the live state of the step's target, record it (StateGathered,
        pre_step) and say whether it conflicts with what was directed/expected."""
        observation = await self.gatherer.observe(plan_for_step(step.action, step.expectation))
        step.pre_step = observation
        conflict = check_observation(step.payload, observation)
        await self._append(
            StateGathered,
            step,
            StateGatheredPayload(
                purpose="pre_step",
                observation=observation,
                conflicts=(clean_text(conflict.detail, MAX_DETAIL, multiline=True),)
                if conflict
                else (),
            ),
        )
        return conflict

    async def _decide_and_run(self, step: Step) -> None:
        """CLAIMED, LIVE: decided on the log prefix before the directive, then (for a
        step) on the target's live state, then on everything the partition holds now."""
        prefix = step.prefix
        assert prefix is not None and step.issuer is not None, "decided only live"
        decision = decide(prefix, step.payload, step.issuer, self.folds.control)
        read_only = step.action.action in READ_ONLY_ACTIONS
        stop = None
        if isinstance(decision, Accepted) and not read_only:
            # Read with the claim (only `decide` ran since) when this is the live claim.
            read, step.stop_at_claim = step.stop_at_claim, None
            stop = await self._stop_signal(step.incident_id, None, read=read)
        awaiting = step.correlation_id in approvals.awaiting(step.view)
        if not await self._apply(
            step, steps.decided(decision, stop=stop, awaiting=awaiting), at=prefix.sequence
        ):
            return
        if read_only:
            await self._run_non_consequential(step, prefix, accepted=False)
            return
        if step.consequential and not await self._apply(
            step,
            steps.gathered(step.phase, await self._gather_before_step(step)),
            at=prefix.sequence,
        ):
            return
        # Look before you leap: the log may hold more than the prefix `decide` saw.
        if not await self._apply(
            step, steps.rechecked(step.phase, await self._recheck(step, "before_accept"))
        ):
            return
        if step.consequential:
            await self._execute_step(step, accept_at=prefix.sequence)
        else:
            await self._accept(step, prefix.sequence)
            await self._run_non_consequential(step, prefix, accepted=True)

    async def _apply(self, step: Step, result: steps.Next, *, at: int | None = None) -> bool:
        """Carry out what a transition returned; True when the step goes on. `at` is
        the ledger position a refusal was checked at (default: the step's view)."""
        step.phase = steps.advance(step.phase, result)
        if isinstance(result, steps.Go):
            return True
        if isinstance(result, steps.Refuse):
            await self._refuse(step, step.view.sequence if at is None else at, result.refusal)
        elif isinstance(result, steps.NotStarted):
            if result.stop is not None:
                m.STOPS_ENFORCED.labels(result.stop).inc()
            await self._fail_unstarted(step, result.error)
        elif isinstance(result, steps.Elsewhere):
            await self._decided_elsewhere(step, result.detail)
        elif isinstance(result, steps.Fenced):
            m.DIRECTIVES.labels("fenced", "lost_claim").inc()
            log.warning(
                "claim fenced off before the side effect; not acting", extra=_step_log(step)
            )
        elif isinstance(result, steps.Wait):
            # Two-person rule: recorded, and waits (the claim stays open) for approvers.
            m.APPROVALS.labels("awaiting", "issued").inc()
            log.info("directive awaiting approval", extra=_step_log(step))
        elif isinstance(result, steps.Unknown):
            await self._outcome_unknown(step, result.reason, note=result.note)
        else:  # the call's answer is carried out where the call is made
            raise steps.IllegalTransition(f"{type(result).__name__} outside the call")
        return False

    async def _accept(self, step: Step, sequence: int) -> None:
        await self.producer.append(self._accepted(step, sequence))
        self._accepted_done(step)

    def _accepted(self, step: Step, sequence: int) -> Envelope:
        return self._event(
            DirectiveAccepted,
            step,
            DirectiveAcceptedPayload(
                action=step.action, consequential=step.consequential, checked_at_sequence=sequence
            ),
        )

    def _accepted_done(self, step: Step) -> None:
        step.phase = steps.moved(step.phase, Phase.ACCEPTED)
        m.DIRECTIVES.labels("accepted", step.action.action.value).inc()
        log.info("directive accepted", extra=_step_log(step))

    async def _refuse(self, step: Step, sequence: int, refusal: Refused) -> None:
        await self._append(
            DirectiveRefused,
            step,
            DirectiveRefusedPayload(
                action=step.action,
                reason=refusal.reason,
                detail=clean_text(refusal.detail, MAX_MACHINE_TEXT, multiline=True),
                refused_by="executor",
                checked_at_sequence=sequence,
            ),
        )
        await self._finish(step, ClaimStatus.REFUSED, refusal.reason.value)
        m.DIRECTIVES.labels("refused", refusal.reason.value).inc()
        log.info(
            "directive refused",
            extra={**_step_log(step), "reason": refusal.reason.value, "detail": refusal.detail},
        )

    async def _finish(self, step: Step, status: ClaimStatus, detail: str = "") -> bool:
        """Close the claim, fenced: a claim another executor took over is not ours."""
        done = await self.claims.finish(
            step.correlation_id,
            status,
            detail,
            generation=step.generation,
            executor_id=self.settings.id,
        )
        if not done:
            m.DIRECTIVES.labels("fenced", "finish").inc()
            log.warning(
                "claim no longer ours: not closed (its new owner decides)",
                extra={**_step_log(step), "status": status.value},
            )
        return done

    async def _run_non_consequential(
        self, step: Step, state: IncidentState, *, accepted: bool
    ) -> None:
        action = step.action
        if not accepted:
            await self._accept(step, state.sequence)
        if isinstance(action, GatherState):
            observation = await self.gatherer.observe(
                plan_for_regions(state.authority, action.regions)
            )
            await self._append(
                StateGathered,
                step,
                StateGatheredPayload(purpose="directed", observation=observation),
            )
        elif isinstance(action, UpdateIncidentRecord):
            await self._record(step, scrub(action.note, limit=4000), key=step.correlation_id)
        elif isinstance(action, Verify):
            pass  # the verifier reacts to DirectiveAccepted
        await self._finish(step, ClaimStatus.SUCCEEDED)
        step.phase = steps.moved(step.phase, Phase.SUCCEEDED)

    # -- the step ---------------------------------------------------------------------

    async def _execute_step(self, step: Step, *, accept_at: int | None = None) -> None:
        """ACCEPTED -> INTENT_RECORDED -> GATED -> ACTING -> the outcome. With
        `accept_at` the step is still RECHECKED: DirectiveAccepted (checked at that
        sequence) and StepStarted go out as one append (one acknowledgement to wait for,
        in this order; a crash between them is the same as one after the first)."""
        cid = step.correlation_id
        # The undo: the target's state before acting (as this handling's pre-step gather
        # read and recorded it; else read now), recorded with the intent.
        undo = await record_undo(
            self.adapters, step.action, self.settings.gather_timeout, gathered=step.pre_step
        )
        accepted = None if accept_at is None else self._accepted(step, accept_at)
        # Intent before action: StepStarted is in the log before the gate below, so a
        # crash anywhere after it is never mistaken for "nothing happened"...
        intent = self._event(
            StepStarted,
            step,
            StepStartedPayload(
                action=step.action,
                idempotency_key=cid,
                executor_id=self.settings.id,
                fencing_token=max(0, step.generation),
                undo=undo,
            ),
        )
        if accepted is None:
            await self.producer.append(intent)
        else:
            await self.producer.append_many([accepted, intent])
            self._accepted_done(step)
        step.phase = steps.moved(step.phase, Phase.INTENT_RECORDED)
        if self.faults.pause_before_side_effect:
            log.warning("fault: pausing before the side effect", extra=_step_log(step))
            await asyncio.sleep(self.faults.pause_before_side_effect)
        # ...and right before acting: everything the partition holds now...
        if not await self._apply(
            step, steps.rechecked(step.phase, await self._recheck(step, "at_gate"))
        ):
            return
        if self.faults.pause_before_gate:
            log.warning("fault: pausing before the gate", extra=_step_log(step))
            await asyncio.sleep(self.faults.pause_before_gate)
        # ...then the gate: fenced, and no stop committed before it (one statement).
        gate_sent = time.monotonic()
        gate = await self.claims.start(
            cid,
            generation=step.generation,
            executor_id=self.settings.id,
            incident_id=step.incident_id,
        )
        stop_kind: steps.StopKind | None = None
        if gate.stop_scope is not None:
            stop_kind = "kill_switch" if gate.stop_scope == GLOBAL_SCOPE else "hold"
            if gate.stop_changed_at is not None:
                self.containment.stop_seen(stop_kind, gate.stop_scope, gate.stop_changed_at)
        if not await self._apply(
            step,
            steps.gated(started=gate.started, stop_kind=stop_kind, stop_reason=gate.stop_reason),
        ):
            return
        # ...and one more look after it: the gate's table holds only holds, closes and
        # the kill switch, so a takeover or authority change appended between the look
        # above and the gate would otherwise pass. The gate is the moment of acting;
        # anything in the log before it stops the step, anything after it is later.
        if not await self._apply(
            step, steps.rechecked(step.phase, await self._recheck(step, "after_gate"))
        ):
            return
        if self.faults.pause_after_gate:
            log.warning("fault: pausing after the gate", extra=_step_log(step))
            await asyncio.sleep(self.faults.pause_after_gate)
        # A process frozen (or starved) since the gate may have lost the incident to
        # another executor, which reports the step as unknown: past the bound, no call.
        # Nothing is awaited between this check and the call.
        elapsed = time.monotonic() - gate_sent
        if not await self._apply(
            step, steps.in_time(step.phase, elapsed=elapsed, limit=self.settings.act_within)
        ):
            return

        step.phase = steps.moved(step.phase, Phase.ACTING)
        started = time.perf_counter()
        self.containment.side_effect(step.incident_id, _now())
        answer: ActionResult | CallError
        try:
            async with asyncio.timeout(self.settings.step_timeout):
                answer = await self._act(step.action, cid)
        except TimeoutError:
            answer = CallError.timed_out(self.settings.step_timeout)
        except PortError as exc:
            # rejected: the target refused, nothing changed (its words, made to fit the
            # contract); otherwise the call may have landed (scrubbed: not its words)
            answer = (
                CallError(str(exc), rejected=True) if exc.rejected else CallError(scrub(str(exc)))
            )
        duration = time.perf_counter() - started
        m.STEP_SECONDS.labels(step.action.action.value).observe(duration)
        if self.faults.pause_after_side_effect:
            log.warning("fault: pausing after the side effect", extra=_step_log(step))
            await asyncio.sleep(self.faults.pause_after_side_effect)

        outcome = steps.called(answer)
        if isinstance(outcome, steps.Unknown):
            m.STEPS.labels(step.action.action.value, "timed_out").inc()
            await self._apply(step, outcome)
            return
        step.phase = steps.advance(step.phase, outcome)
        if isinstance(outcome, steps.Succeeded):
            summary = step_summary(step.action, outcome.result)
            await self._append(
                StepSucceeded,
                step,
                StepSucceededPayload(
                    action=step.action,
                    result=outcome.result,
                    summary=summary,
                    duration_ms=duration * 1000,
                ),
            )
            await self._finish(step, ClaimStatus.SUCCEEDED)
            m.STEPS.labels(step.action.action.value, "succeeded").inc()
        else:
            summary = failure_summary(step.action, outcome.error)
            await self._append(
                StepFailed,
                step,
                StepFailedPayload(
                    action=step.action,
                    error=outcome.error,
                    retriable=False,
                    summary=summary,
                    duration_ms=duration * 1000,
                ),
            )
            await self._finish(step, ClaimStatus.FAILED, outcome.error)
            m.STEPS.labels(step.action.action.value, "failed").inc()
        log.info(
            "step finished",
            extra={
                **_step_log(step),
                "ok": isinstance(outcome, steps.Succeeded),
                "duration_ms": duration * 1000,
            },
        )
        await self._record(step, summary, key=f"{cid}/record")

    async def _act(self, action: Action, key: str) -> ActionResult:
        if self.faults.slow_side_effect:
            await asyncio.sleep(self.faults.slow_side_effect)
        if isinstance(action, DisableFlagRule):
            return await self.adapters.flags.disable_rule(
                action.flag, action.rule, action.region, idempotency_key=key
            )
        if isinstance(action, DrainWorkerPool):
            return await self.adapters.orchestrator.drain_pool(
                action.pool, action.region, idempotency_key=key
            )
        if isinstance(action, RestartDependencyTier):
            return await self.adapters.orchestrator.restart_tier(
                action.tier, action.region, idempotency_key=key
            )
        if isinstance(action, EnableFlagRule | ScaleWorkerPool):
            return await act_inverse(self.adapters, action, key)
        raise PortError(f"{action.action.value} is not a side effect", rejected=True)

    async def _fail_unstarted(self, step: Step, error: str) -> None:
        """The side effect never began (refused at the last gate, or never started
        before a crash): StepFailed(not_started), which holds nothing."""
        await self._append(
            StepFailed,
            step,
            StepFailedPayload(
                action=step.action,
                error=error,
                summary=failure_summary(step.action, error),
                duration_ms=0.0,
                not_started=True,
            ),
        )
        await self._finish(step, ClaimStatus.FAILED, error)
        m.STEPS.labels(step.action.action.value, "stopped").inc()
        await self._record(
            step, failure_summary(step.action, error), key=f"{step.correlation_id}/record"
        )

    async def _outcome_unknown(self, step: Step, reason: str, *, note: str) -> None:
        """Re-gather the target and report StepOutcomeUnknown: never re-run, never
        "failed". The verifier judges it against the pre-step state."""
        observation = await self.gatherer.observe(plan_for_outcome(step.action))
        await self._append(
            StepOutcomeUnknown,
            step,
            StepOutcomeUnknownPayload(
                action=step.action,
                reason=clean_text(reason, MAX_MACHINE_TEXT, multiline=True),
                observation=observation,
            ),
        )
        await self._finish(step, ClaimStatus.UNKNOWN, reason)
        m.RECOVERIES.labels("outcome_unknown").inc()
        m.STEPS.labels(step.action.action.value, "unknown").inc()
        log.warning("step outcome unknown", extra={**_step_log(step), "reason": reason})
        await self._record(
            step, unknown_summary(step.action, note), key=f"{step.correlation_id}/record"
        )

    async def _record(self, step: Step, summary: str, *, key: str) -> None:
        delivered = False
        try:
            async with asyncio.timeout(self.settings.record_timeout):
                result = await self.adapters.record.append_note(
                    step.incident_id, summary, idempotency_key=key
                )
            delivered = result.delivered
        except (PortError, TimeoutError) as exc:
            log.warning(
                "incident record not updated", extra={**_step_log(step), "error": scrub(str(exc))}
            )
        await self._append(
            IncidentRecordUpdated,
            step,
            IncidentRecordUpdatedPayload(
                destination=self.adapter_settings.record_backend,
                summary=clean_text(summary, MAX_MACHINE_TEXT, multiline=True),
                delivered=delivered,
                idempotency_key=key,
            ),
        )

    # -- stops --------------------------------------------------------------------------

    async def _stop_signal(
        self, incident_id: str, state: IncidentState | None, *, read: StopRead | None = None
    ) -> Stop | None:
        """Kill switch (conn.control, in memory), the hold in the fold (if given), and
        the stops in PostgreSQL (`read`: as just read with the claim; else read now).
        Unreadable stops count as a stop (fail closed)."""
        control = self.folds.control
        if control.kill_switch:
            return Stop("kill_switch", f"global kill switch engaged: {control.reason}")
        if state is not None and state.hold is not None:
            return Stop("hold", f"incident on hold: {state.hold.detail or state.hold.reason}")
        pool = self._pool
        assert pool is not None
        if read is not None:
            stop = read.stop
        else:
            try:
                # A PostgreSQL restart is waited out (bounded); the answer is still read
                # immediately before the side effect.
                stop = await retry(
                    lambda: active_stop(pool, incident_id),
                    what="read stop signals",
                    deps=self.deps,
                    dependency=POSTGRES,
                    give_up_after=self.settings.stop_read_patience,
                    stopping=self.loop.stopping,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                return Stop(
                    "hold", f"stop signals unreadable ({type(exc).__name__}): failing closed"
                )
        if stop is None:
            return None
        if stop.scope == GLOBAL_SCOPE:
            self.containment.stop_seen("kill_switch", GLOBAL_SCOPE, stop.changed_at)
            return Stop("kill_switch", f"global kill switch engaged: {stop.reason}")
        self.containment.stop_seen("hold", incident_id, stop.changed_at)
        return Stop("hold", f"incident on hold: {stop.reason}")

    # -- appending ----------------------------------------------------------------------

    async def _append(self, cls: type[Envelope], step: Step, payload: Frozen) -> Envelope:
        event = self._event(cls, step, payload)
        await self.producer.append(event)
        return event

    def _event(self, cls: type[Envelope], step: Step, payload: Frozen) -> Envelope:
        """The step's next event, caused by its previous one."""
        event = new_event(
            cls,
            incident_id=step.incident_id,
            payload=payload,
            actor=Actor.service(self.producer.principal),
            producer=f"{self.producer.principal}/{self.settings.id}",
            correlation_id=step.correlation_id,
            causation_id=step.cause,
        )
        step.cause = str(event.event_id)
        return event


def given_up(action: Recovery, error: str) -> steps.Next:
    """The outcome of a directive whose handling the runtime gave up on, by what
    `lifecycle.recovery` says of its claim and the log (decided as if the prefix were not
    at hand: nothing is decided again). Past the gate the side effect may have begun:
    StepOutcomeUnknown, never "failed". Before it: StepFailed(not_started) once
    DirectiveAccepted or StepStarted is in the log, else DirectiveRefused."""
    if action is Recovery.FINISH_FROM_LOG:
        return steps.Elsewhere("the log has its outcome")
    if action is Recovery.OUTCOME_UNKNOWN:
        return steps.Unknown(
            f"the executor failed while handling this step after its gate ({error}); it "
            "was not re-run. The state observed now is attached.",
            note="executor failed mid-step; outcome unknown, not re-run",
        )
    if action in (Recovery.NOT_STARTED, Recovery.CONTINUE):
        return steps.NotStarted(
            f"not executed: the executor failed while handling this directive ({error}) "
            "before its side effect (its claim never passed the gate); re-read the ledger "
            "and re-issue it"
        )
    return steps.Refuse(
        Refused(
            RefusalReason.STALE_BASE,
            f"the executor failed while handling this directive ({error}); nothing was "
            "executed: re-read the ledger and re-issue it",
        )
    )


def _step_log(step: Step) -> dict[str, object]:
    return {
        "incident_id": step.incident_id,
        "correlation_id": step.correlation_id,
        "action": step.action.action.value,
    }


def _claim_log(claim: Claim) -> dict[str, object]:
    return {
        "incident_id": claim.incident_id,
        "correlation_id": claim.correlation_id,
        "claim_status": claim.status.value,
        "claim_executor": claim.executor_id,
        "claim_generation": claim.generation,
    }
