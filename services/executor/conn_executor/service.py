"""The executor: decides each DirectiveIssued against the log prefix before it,
gathers live state, claims the step, records intent, acts once, records the
outcome; after a crash or rebalance it reports unfinished steps as
StepOutcomeUnknown and never re-runs them.

Events appended per directive (correlation_id = the directive's):

- refused:            DirectiveRefused(refused_by="executor")
- consequential:      StateGathered(pre_step) -> DirectiveRefused (conflict/partial state:
                      the fold derives a hold) | DirectiveAccepted -> StepStarted ->
                      StepSucceeded | StepFailed -> IncidentRecordUpdated
- gather_state:       DirectiveAccepted -> StateGathered(directed)
- verify:             DirectiveAccepted (the verifier reacts to it)
- update_incident_record: DirectiveAccepted -> IncidentRecordUpdated
- recovered step:     StepOutcomeUnknown(observation) -> IncidentRecordUpdated
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
from aiokafka import TopicPartition

from conn_adapters.config import Adapters, AdapterSettings, build_adapters
from conn_core.fold import evolve
from conn_core.ports import PortError
from conn_core.rules import Accepted, Refused, check_control, check_observation, decide
from conn_core.state import DirectiveRecord, DirectiveStatus, IncidentState
from conn_executor import metrics as m
from conn_executor.claims import CLAIMS_DDL, CLAIMS_LOCK_KEY, Claim, ClaimStatus, ClaimStore
from conn_executor.gather import Gatherer, plan_for_outcome, plan_for_regions, plan_for_step
from conn_executor.lookahead import LookAhead
from conn_executor.redact import failure_summary, scrub, step_summary, unknown_summary
from conn_executor.settings import ExecutorSettings
from conn_runtime import db
from conn_runtime.kafka import Consumed, Position
from conn_runtime.resilience import POSTGRES, retry
from conn_runtime.service import ConsumerService
from conn_runtime.settings import DatabaseSettings, KafkaSettings
from conn_runtime.stops import GLOBAL_SCOPE, active_stop
from conn_schemas.events import (
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
from conn_schemas.observations import ActionResult
from conn_schemas.signing import SignerRole
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    READ_ONLY_ACTIONS,
    Action,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    Expectation,
    Frozen,
    GatherState,
    RefusalReason,
    RestartDependencyTier,
    UpdateIncidentRecord,
    Verify,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOG_STATUS = {
    DirectiveStatus.SUCCEEDED: ClaimStatus.SUCCEEDED,
    DirectiveStatus.FAILED: ClaimStatus.FAILED,
    DirectiveStatus.OUTCOME_UNKNOWN: ClaimStatus.UNKNOWN,
    DirectiveStatus.REFUSED: ClaimStatus.REFUSED,
}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Step:
    """One directive being handled: who, what, and where it sits in the log."""

    correlation_id: str
    incident_id: str
    payload: DirectiveIssuedPayload
    cause: str | None
    position: Position
    generation: int
    issuer: Actor | None = None

    @property
    def action(self) -> Action:
        return self.payload.action

    @property
    def expectation(self) -> Expectation | None:
        return self.payload.expectation

    @property
    def consequential(self) -> bool:
        return self.action.action in CONSEQUENTIAL_ACTIONS


@dataclass(frozen=True)
class StopSignal:
    kind: str  # "kill_switch" | "hold"
    reason: str


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
        self._starts: defaultdict[str, deque[datetime]] = defaultdict(lambda: deque(maxlen=64))
        self._all_starts: deque[datetime] = deque(maxlen=256)
        self._stops_seen: set[tuple[str, str, datetime]] = set()
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
            self._pool = await db.create_pool(self.database.database_url)
        for attempt in range(3):
            try:
                await db.apply_schema(self._pool, CLAIMS_DDL, lock_key=CLAIMS_LOCK_KEY)
                break
            except asyncpg.UniqueViolationError:
                # Another service created a shared table (conn_stops) at the same moment.
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)
        self._claims = ClaimStore(self._pool, persist=self._persist)
        if self._adapters is None:
            self._adapters = build_adapters(self.adapter_settings)
        a = self._adapters
        self._gatherer = Gatherer(a.flags, a.orchestrator, a.metrics, self.settings.gather_timeout)
        await self.lookahead.start()
        log.info(
            "executor ready",
            extra={"executor_id": self.settings.id, "group": self.settings.group_id},
        )

    async def teardown(self) -> None:
        await self.lookahead.stop()
        if self._adapters is not None:
            await self._adapters.aclose()
        if self._pool is not None:
            await self._pool.close()

    # -- consuming -------------------------------------------------------------------

    async def handle(self, consumed: Consumed, before: IncidentState) -> None:
        event = consumed.event
        if isinstance(event, DirectiveIssued):
            await self._on_directive(consumed, event, before)
        elif isinstance(event, HoldDeclared) and check_control(before, event) is None:
            self._observe_stop("hold", event.incident_id, event.occurred_at)

    async def on_control(self, consumed: Consumed) -> None:
        event = consumed.event
        if isinstance(event, KillSwitchEngaged):
            log.warning("kill switch engaged", extra={"reason": event.payload.reason})
            self._observe_stop("kill_switch", GLOBAL_SCOPE, event.occurred_at)

    async def on_caught_up(self, partitions: set[TopicPartition]) -> None:
        """History re-read after an assignment: finish what a previous owner left open
        below the committed offset (records above it are redelivered and handled live)."""
        ours = sorted(tp.partition for tp in partitions if tp.topic == self.topics.events)
        if not ours:
            return
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
                ahead = await self.lookahead.read(
                    claim.topic, claim.partition, committed, claim.incident_id
                )
                after = copy.deepcopy(state)
                for e in ahead:
                    evolve(after, e)
                record = after.directives[claim.correlation_id]
                step = Step(
                    correlation_id=claim.correlation_id,
                    incident_id=claim.incident_id,
                    payload=DirectiveIssuedPayload(
                        action=record.action,
                        expectation=record.expectation,
                        based_on_sequence=record.based_on_sequence,
                    ),
                    cause=None,
                    position=Position(claim.topic, claim.partition, claim.directive_offset),
                    generation=self.loop.generation(),
                )
                await self._resume(step, claim, record, after, before=None)

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
        step = Step(
            correlation_id=cid,
            incident_id=event.incident_id,
            payload=event.payload,
            cause=str(event.event_id),
            position=consumed.position,
            generation=self.loop.generation(),
            issuer=event.actor,
        )
        async with self._locks[event.incident_id]:
            claim = await self.claims.try_claim(
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
                await self._decide_and_run(step, before)
                return
            await self._redelivered(step, event, before)

    async def _redelivered(self, step: Step, event: DirectiveIssued, before: IncidentState) -> None:
        """The claim exists: this record was handled (at least partly) before a crash,
        a rebalance or a failed attempt. Read what was appended after it, then finish."""
        claim = await self.claims.get(step.correlation_id)
        if claim is None:
            raise RuntimeError(f"claim {step.correlation_id} vanished")
        if claim.final:
            m.DIRECTIVES.labels("redelivered", claim.status.value).inc()
            return
        ahead = await self.lookahead.read(
            step.position.topic, step.position.partition, step.position.offset + 1, step.incident_id
        )
        after = copy.deepcopy(before)
        evolve(after, event)
        for e in ahead:
            evolve(after, e)
        await self._resume(step, claim, after.directives[step.correlation_id], after, before=before)

    async def _resume(
        self,
        step: Step,
        claim: Claim,
        record: DirectiveRecord,
        after: IncidentState,
        *,
        before: IncidentState | None,
    ) -> None:
        extra = {**_claim_log(claim), "log_status": record.status.value}
        if record.status in _LOG_STATUS:
            await self.claims.finish(step.correlation_id, _LOG_STATUS[record.status])
            m.RECOVERIES.labels("already_recorded").inc()
            log.info("unfinished claim already has its outcome in the log", extra=extra)
            return
        if record.status is DirectiveStatus.STARTED or claim.status is ClaimStatus.STARTED:
            await self._outcome_unknown(step, claim)
            return
        # Neither the log nor the claim says it started: no side effect can have begun.
        step.generation = self.loop.generation()
        if not await self.claims.take_over(
            step.correlation_id, generation=step.generation, executor_id=self.settings.id
        ):
            current = await self.claims.get(step.correlation_id)
            if current is not None and current.status is ClaimStatus.STARTED:
                await self._outcome_unknown(step, current)
                return
            m.DIRECTIVES.labels("fenced", "claim_held_elsewhere").inc()
            log.warning("claim held by another executor; not taken over", extra=extra)
            return
        m.RECOVERIES.labels("taken_over").inc()
        log.info("taking over an unfinished claim", extra=extra)
        if record.status is DirectiveStatus.ISSUED:
            if before is None:
                await self._refuse(
                    step,
                    after.sequence,
                    Refused(
                        RefusalReason.STALE_BASE,
                        "the executor restarted while deciding this directive; nothing was "
                        "executed: re-read the ledger and re-issue it",
                    ),
                )
                return
            await self._decide_and_run(step, before)
            return
        # ACCEPTED, never started.
        if not step.consequential:
            await self._run_non_consequential(step, after, accepted=True)
            return
        stop = await self._stop_signal(step.incident_id, after)
        if stop is not None:
            await self._fail_unstarted(step, f"stopped before side effect: {stop.reason}")
            return
        conflict = await self._gather_before_step(step)
        if conflict is not None:
            await self._fail_unstarted(step, f"not executed: {conflict.detail}")
            return
        await self._execute_step(step)

    async def _gather_before_step(self, step: Step) -> Refused | None:
        """Read the live state of the step's target, record it (StateGathered,
        pre_step) and say whether it conflicts with what was directed/expected."""
        observation = await self.gatherer.observe(plan_for_step(step.action, step.expectation))
        conflict = check_observation(step.payload, observation)
        await self._append(
            StateGathered,
            step,
            StateGatheredPayload(
                purpose="pre_step",
                observation=observation,
                conflicts=(conflict.detail,) if conflict else (),
            ),
        )
        return conflict

    async def _decide_and_run(self, step: Step, before: IncidentState) -> None:
        assert step.issuer is not None
        decision = decide(before, step.payload, step.issuer, self.folds.control)
        if isinstance(decision, Accepted) and step.action.action not in READ_ONLY_ACTIONS:
            stop = await self._stop_signal(step.incident_id, None)
            if stop is not None:
                reason = (
                    RefusalReason.KILL_SWITCH
                    if stop.kind == "kill_switch"
                    else RefusalReason.ON_HOLD
                )
                decision = Refused(reason, stop.reason)
        if isinstance(decision, Refused):
            await self._refuse(step, before.sequence, decision)
            return
        if not step.consequential:
            await self._run_non_consequential(step, before, accepted=False)
            return
        conflict = await self._gather_before_step(step)
        if conflict is not None:
            await self._refuse(step, before.sequence, conflict)
            return
        await self._accept(step, before.sequence)
        await self._execute_step(step)

    async def _accept(self, step: Step, sequence: int) -> None:
        await self._append(
            DirectiveAccepted,
            step,
            DirectiveAcceptedPayload(
                action=step.action, consequential=step.consequential, checked_at_sequence=sequence
            ),
        )
        m.DIRECTIVES.labels("accepted", step.action.action.value).inc()
        log.info("directive accepted", extra=_step_log(step))

    async def _refuse(self, step: Step, sequence: int, refusal: Refused) -> None:
        await self._append(
            DirectiveRefused,
            step,
            DirectiveRefusedPayload(
                action=step.action,
                reason=refusal.reason,
                detail=refusal.detail,
                refused_by="executor",
                checked_at_sequence=sequence,
            ),
        )
        await self.claims.finish(step.correlation_id, ClaimStatus.REFUSED, refusal.reason.value)
        m.DIRECTIVES.labels("refused", refusal.reason.value).inc()
        log.info(
            "directive refused",
            extra={**_step_log(step), "reason": refusal.reason.value, "detail": refusal.detail},
        )

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
        await self.claims.finish(step.correlation_id, ClaimStatus.SUCCEEDED)

    # -- the step ---------------------------------------------------------------------

    async def _execute_step(self, step: Step) -> None:
        cid = step.correlation_id
        if not await self.claims.mark_started(
            cid, generation=step.generation, executor_id=self.settings.id
        ):
            m.DIRECTIVES.labels("fenced", "lost_claim").inc()
            log.warning(
                "claim fenced off before the side effect; not acting", extra=_step_log(step)
            )
            return
        await self._append(
            StepStarted,
            step,
            StepStartedPayload(
                action=step.action,
                idempotency_key=cid,
                executor_id=self.settings.id,
                fencing_token=max(0, step.generation),
            ),
        )
        if self.faults.pause_before_side_effect:
            log.warning("fault: pausing before the side effect", extra=_step_log(step))
            await asyncio.sleep(self.faults.pause_before_side_effect)
        # The last gate: stop signals read immediately before the side effect.
        stop = await self._stop_signal(step.incident_id, None)
        if stop is not None:
            m.STOPS_ENFORCED.labels(stop.kind).inc()
            error = f"stopped before side effect: {stop.reason}"
            await self._append(
                StepFailed,
                step,
                StepFailedPayload(
                    action=step.action,
                    error=error,
                    summary=failure_summary(step.action, error),
                    duration_ms=0.0,
                ),
            )
            await self.claims.finish(cid, ClaimStatus.FAILED, error)
            m.STEPS.labels(step.action.action.value, "stopped").inc()
            await self._record(step, failure_summary(step.action, error), key=f"{cid}/record")
            return

        started = time.perf_counter()
        self._note_side_effect(step.incident_id)
        result: ActionResult | None = None
        error = ""
        retriable = timed_out = False
        try:
            async with asyncio.timeout(self.settings.step_timeout):
                result = await self._act(step.action, cid)
        except TimeoutError:
            error, retriable, timed_out = (
                f"timed out after {self.settings.step_timeout}s",
                True,
                True,
            )
        except PortError as exc:
            error, retriable, timed_out = str(exc), exc.retriable, exc.timeout
        duration = time.perf_counter() - started
        m.STEP_SECONDS.labels(step.action.action.value).observe(duration)
        if self.faults.pause_after_side_effect:
            log.warning("fault: pausing after the side effect", extra=_step_log(step))
            await asyncio.sleep(self.faults.pause_after_side_effect)

        if result is not None:
            summary = step_summary(step.action, result)
            await self._append(
                StepSucceeded,
                step,
                StepSucceededPayload(
                    action=step.action, result=result, summary=summary, duration_ms=duration * 1000
                ),
            )
            await self.claims.finish(cid, ClaimStatus.SUCCEEDED)
            m.STEPS.labels(step.action.action.value, "succeeded").inc()
        else:
            summary = failure_summary(step.action, error, timed_out=timed_out)
            await self._append(
                StepFailed,
                step,
                StepFailedPayload(
                    action=step.action,
                    error=error,
                    retriable=retriable,
                    timed_out=timed_out,
                    summary=summary,
                    duration_ms=duration * 1000,
                ),
            )
            await self.claims.finish(cid, ClaimStatus.FAILED, error)
            m.STEPS.labels(step.action.action.value, "timed_out" if timed_out else "failed").inc()
        log.info(
            "step finished",
            extra={**_step_log(step), "ok": result is not None, "duration_ms": duration * 1000},
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
        raise PortError(f"{action.action.value} is not a side effect")

    async def _fail_unstarted(self, step: Step, error: str) -> None:
        """An accepted step taken over after a crash that must not run after all."""
        await self._append(
            StepFailed,
            step,
            StepFailedPayload(
                action=step.action,
                error=error,
                summary=failure_summary(step.action, error),
                duration_ms=0.0,
            ),
        )
        await self.claims.finish(step.correlation_id, ClaimStatus.FAILED, error)
        m.STEPS.labels(step.action.action.value, "stopped").inc()

    async def _outcome_unknown(self, step: Step, claim: Claim) -> None:
        observation = await self.gatherer.observe(plan_for_outcome(step.action))
        reason = (
            f"executor {claim.executor_id} (generation {claim.generation}) stopped after "
            f"starting this step and before recording its outcome; it was not re-run. "
            f"The state observed now is attached."
        )
        await self._append(
            StepOutcomeUnknown,
            step,
            StepOutcomeUnknownPayload(action=step.action, reason=reason, observation=observation),
        )
        await self.claims.finish(step.correlation_id, ClaimStatus.UNKNOWN, reason)
        m.RECOVERIES.labels("outcome_unknown").inc()
        m.STEPS.labels(step.action.action.value, "unknown").inc()
        log.warning("step outcome unknown after recovery", extra=_claim_log(claim))
        await self._record(
            step,
            unknown_summary(step.action, "executor restarted mid-step; not re-run"),
            key=f"{step.correlation_id}/record",
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
                summary=summary,
                delivered=delivered,
                idempotency_key=key,
            ),
        )

    # -- stops --------------------------------------------------------------------------

    async def _stop_signal(
        self, incident_id: str, state: IncidentState | None
    ) -> StopSignal | None:
        """Kill switch (conn.control, in memory), the hold in the fold (if given), and
        the stops in PostgreSQL. Unreadable stops count as a stop (fail closed)."""
        control = self.folds.control
        if control.kill_switch:
            return StopSignal("kill_switch", f"global kill switch engaged: {control.reason}")
        if state is not None and state.hold is not None:
            return StopSignal("hold", f"incident on hold: {state.hold.detail or state.hold.reason}")
        pool = self._pool
        assert pool is not None
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
            return StopSignal(
                "hold", f"stop signals unreadable ({type(exc).__name__}): failing closed"
            )
        if stop is None:
            return None
        if stop.scope == GLOBAL_SCOPE:
            self._observe_stop("kill_switch", GLOBAL_SCOPE, stop.changed_at)
            return StopSignal("kill_switch", f"global kill switch engaged: {stop.reason}")
        self._observe_stop("hold", incident_id, stop.changed_at)
        return StopSignal("hold", f"incident on hold: {stop.reason}")

    def _note_side_effect(self, incident_id: str) -> None:
        now = _now()
        self._starts[incident_id].append(now)
        self._all_starts.append(now)

    def _observe_stop(self, kind: str, scope: str, thrown_at: datetime) -> None:
        """Containment: how long after the stop was thrown did side effects still start?"""
        key = (kind, scope, thrown_at)
        if key in self._stops_seen:
            return
        self._stops_seen.add(key)
        starts = self._all_starts if scope == GLOBAL_SCOPE else self._starts.get(scope, ())
        late = [s for s in starts if s > thrown_at]
        if late:
            m.SIDE_EFFECTS_AFTER_STOP.labels(kind).inc(len(late))
            log.error(
                "side effects started after a stop was thrown",
                extra={"kind": kind, "scope": scope, "count": len(late)},
            )
        latency = max((s - thrown_at).total_seconds() for s in late) if late else 0.0
        m.CONTAINMENT_SECONDS.labels(kind).observe(latency)

    # -- appending ----------------------------------------------------------------------

    async def _append(self, cls: type[Envelope], step: Step, payload: Frozen) -> Envelope:
        event = new_event(
            cls,
            incident_id=step.incident_id,
            payload=payload,
            actor=Actor.service(self.producer.principal),
            producer=f"{self.producer.principal}/{self.settings.id}",
            correlation_id=step.correlation_id,
            causation_id=step.cause,
        )
        await self.producer.append(event)
        step.cause = str(event.event_id)
        return event


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
