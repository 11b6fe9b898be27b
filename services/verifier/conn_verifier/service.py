"""The verifier service: a `ConsumerService` that schedules verifications as tasks.

Triggers (StepSucceeded / StepOutcomeUnknown of a consequential step, and an
accepted verify directive) only prompt a rescan of the incident's fold; what is
due is derived purely (`plan.pending`), so after catch-up the same rescan picks
up work a crashed instance left behind. Each verification runs as its own task
(bounded by a semaphore, at most one per correlation id) so the consumer loop
never waits for a settle window.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from aiokafka import TopicPartition

from conn_adapters.config import Adapters, AdapterSettings, build_adapters
from conn_core.state import IncidentState
from conn_runtime.kafka import Consumed, Position
from conn_runtime.resilience import KAFKA, StopRequested, retry
from conn_runtime.service import ConsumerService
from conn_runtime.settings import KafkaSettings
from conn_schemas.events import (
    DirectiveAccepted,
    StepOutcomeUnknown,
    StepSucceeded,
    VerificationSnapshot,
    new_event,
)
from conn_schemas.signing import SignerRole
from conn_schemas.values import Actor
from conn_verifier import metrics as m
from conn_verifier.plan import Job, pending
from conn_verifier.settings import VerifierSettings
from conn_verifier.verify import ReadPorts, run_verification

log = logging.getLogger(__name__)

TRIGGERS = (StepSucceeded, StepOutcomeUnknown, DirectiveAccepted)

Key = tuple[str, str]
"""(incident_id, correlation_id of the snapshot)."""


class VerifierService(ConsumerService):
    name = "verifier"
    role = SignerRole.VERIFIER

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: VerifierSettings | None = None,
        adapter_settings: AdapterSettings | None = None,
        *,
        adapters: Adapters | None = None,
    ) -> None:
        self.settings = settings or VerifierSettings()
        super().__init__(
            kafka,
            group_id=self.settings.group_id,
            ops_host=self.settings.metrics_host,
            ops_port=self.settings.metrics_port,
            follow_control=False,  # verification is read-only: the kill switch does not stop it
        )
        self._adapter_settings = adapter_settings or AdapterSettings()
        self._adapters = adapters
        self._limit = asyncio.Semaphore(self.settings.max_concurrent)
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._appended: set[Key] = set()
        """Snapshots appended but not yet folded back (so a rescan does not redo them)."""
        self._causes: dict[Key, str] = {}

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        if self._adapters is None:
            self._adapters = build_adapters(self._adapter_settings)

    async def teardown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._adapters is not None:
            await self._adapters.aclose()

    @property
    def ports(self) -> ReadPorts:
        if self._adapters is None:
            raise RuntimeError("verifier not started")
        a = self._adapters
        return ReadPorts(flags=a.flags, orchestrator=a.orchestrator, metrics=a.metrics)

    @property
    def in_flight(self) -> set[Key]:
        return set(self._tasks)

    # -- consumer hooks -------------------------------------------------------------------

    async def handle(self, consumed: Consumed, before: IncidentState) -> None:
        del before  # what is due is read from the fold after the event (scan)
        event = consumed.event
        incident = event.incident_id
        if isinstance(event, VerificationSnapshot) and event.correlation_id is not None:
            # Folded right after this returns (no await in between): the fold now knows.
            self._appended.discard((incident, event.correlation_id))
            return
        if isinstance(event, TRIGGERS) and event.correlation_id is not None:
            self._causes[(incident, event.correlation_id)] = str(event.event_id)
            # The record is folded right after `handle` returns; rescan then.
            asyncio.get_running_loop().call_soon(self.scan, incident)

    async def on_caught_up(self, partitions: set[TopicPartition]) -> None:
        for incident in self.folds.incidents(partitions):
            self.scan(incident)

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        incidents = set(self.folds.incidents(partitions))
        for key, task in list(self._tasks.items()):
            if key[0] in incidents:
                task.cancel()  # the new owner re-derives it from the log
        self._appended = {k for k in self._appended if k[0] not in incidents}
        self._causes = {k: v for k, v in self._causes.items() if k[0] not in incidents}

    # -- scheduling -------------------------------------------------------------------------

    def scan(self, incident_id: str) -> None:
        """Schedule every verification the incident's fold says is due and not running."""
        state = self.folds.states.get(incident_id)
        if state is None:
            return
        for job in pending(state):
            key = (incident_id, job.correlation_id)
            if key in self._tasks or key in self._appended:
                continue
            task = asyncio.create_task(self._run(job), name=f"verify-{job.correlation_id}")
            self._tasks[key] = task
            m.IN_FLIGHT.set(len(self._tasks))
            task.add_done_callback(functools.partial(self._done, key))
            log.info(
                "verification scheduled",
                extra={
                    "incident_id": incident_id,
                    "correlation_id": job.correlation_id,
                    "trigger": job.trigger,
                    "step_correlation_id": job.step_correlation_id,
                    "regions": list(job.regions),
                },
            )

    def _done(self, key: Key, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)
        m.IN_FLIGHT.set(len(self._tasks))

    def _already_recorded(self, key: Key) -> bool:
        state = self.folds.states.get(key[0])
        if state is None:
            return True  # partition revoked meanwhile: not ours to append
        return key[1] in state.snapshot_correlations or key in self._appended

    async def _run(self, job: Job) -> None:
        key = (job.incident_id, job.correlation_id)
        async with self._limit:
            started = time.perf_counter()
            try:
                payload = await run_verification(
                    job, self.ports, settle_override=self.settings.settle_override_seconds
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                m.FAILURES.labels(reason="error").inc()
                log.exception("verification failed", extra={"correlation_id": job.correlation_id})
                return
            event = new_event(
                VerificationSnapshot,
                incident_id=job.incident_id,
                payload=payload,
                actor=Actor.service(self.producer.principal),
                producer=self.producer.principal,
                correlation_id=job.correlation_id,
                causation_id=self._causes.get(key),
            )

            async def append() -> Position | None:
                if self._already_recorded(key):
                    return None
                return await self.producer.append(event)

            # While Kafka is away: wait (bounded backoff, no attempt limit) rather than
            # drop the snapshot; re-checked before every attempt so a snapshot that did
            # land (and was folded back) is not appended twice.
            try:
                position = await retry(
                    append,
                    what="append a verification snapshot",
                    deps=self.deps,
                    dependency=KAFKA,
                    stopping=self.loop.stopping,
                )
            except StopRequested:
                m.FAILURES.labels(reason="append").inc()
                log.warning("stopping before the snapshot was appended", extra={"key": key[1]})
                return
            except Exception:
                m.FAILURES.labels(reason="append").inc()
                log.exception("could not append snapshot", extra={"correlation_id": key[1]})
                return
            if position is None:
                log.info("snapshot already in the log", extra={"correlation_id": key[1]})
                return
            self._appended.add(key)
            self._causes.pop(key, None)
            m.SNAPSHOTS.labels(verdict=payload.verdict.value).inc()
            m.DURATION.observe(time.perf_counter() - started)
            log.info(
                "verification snapshot appended",
                extra={
                    "incident_id": job.incident_id,
                    "correlation_id": job.correlation_id,
                    "step_correlation_id": job.step_correlation_id,
                    "verdict": payload.verdict.value,
                    "detail": payload.detail,
                    "offset": position.offset,
                },
            )
