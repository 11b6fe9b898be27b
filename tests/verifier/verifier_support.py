"""Helpers for the verifier's integration tests: write what an executor would append,
perform the real side effect on the simulator through the adapters, and read the
log back."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer
from kafka_support import LedgerWriter, current

from conn_adapters.config import Adapters, AdapterSettings, build_adapters
from conn_core.authority import parse_authority
from conn_core.fold import fold
from conn_core.state import IncidentState
from conn_runtime.settings import Topics
from conn_schemas import events as ev
from conn_schemas.codec import UnreadableRecord
from conn_schemas.observations import ActionResult
from conn_schemas.values import (
    Action,
    Actor,
    DisableFlagRule,
    DrainWorkerPool,
    RestartDependencyTier,
    Role,
)

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "runbooks" / "checkout-authority.yaml"
ALICE = Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command")
EXECUTOR = Actor.service("executor")

SHORT = {
    "settle_seconds": 2,
    "window_seconds": 2,
    "samples": 3,
    "max_error_rate": 0.02,
    "max_queue_depth": 100,
    "max_reading_age_seconds": 15,
}


def short_runbook(tmp: Path) -> Path:
    """The checkout runbook with short verification windows (a runbook file, not code)."""
    data = yaml.safe_load(RUNBOOK.read_text())
    data["default_verification"] = dict(SHORT)
    data["verification"] = {k: dict(SHORT) for k in data.get("verification", {})}
    path = tmp / "checkout-authority-short.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def adapters_for(sim_url: str) -> Adapters:
    return build_adapters(AdapterSettings(simulator_url=sim_url))


class Bridge:
    """One incident, driven the way the directive API and the executor would."""

    def __init__(self, producer: LedgerWriter, runbook: Path, incident_id: str | None = None):
        self.producer = producer
        self.runbook = runbook
        self.incident_id = incident_id or f"inc-{uuid.uuid4().hex[:8]}"
        self.sequence = 0

    async def _add(
        self, cls: type[ev.Envelope], payload: Any, actor: Actor, cid: str | None = None
    ) -> ev.Envelope:
        event = ev.new_event(
            cls,
            incident_id=self.incident_id,
            payload=payload,
            actor=actor,
            producer="test",
            correlation_id=cid,
        )
        event = await self.producer.append(event)  # as its rightful producer, signed
        self.sequence += 1
        return event

    async def open(self) -> Bridge:
        await self._add(
            ev.IncidentOpened,
            ev.IncidentOpenedPayload(title="checkout failing", service="checkout"),
            ALICE,
        )
        content = self.runbook.read_bytes()
        authority, digest = parse_authority(content, holder="alice")
        await self._add(
            ev.AuthorityDeclared,
            ev.AuthorityDeclaredPayload(
                authority=authority, source_file=self.runbook.name, content_sha256=digest
            ),
            ALICE,
        )
        return self

    async def direct(self, action: Action, consequential: bool = True) -> str:
        cid = f"d-{uuid.uuid4().hex[:10]}"
        await self._add(
            ev.DirectiveIssued,
            ev.DirectiveIssuedPayload(action=action, based_on_sequence=self.sequence),
            ALICE,
            cid,
        )
        await self._add(
            ev.DirectiveAccepted,
            ev.DirectiveAcceptedPayload(
                action=action, consequential=consequential, checked_at_sequence=self.sequence
            ),
            EXECUTOR,
            cid,
        )
        return cid

    async def execute(self, action: Action, adapters: Adapters) -> str:
        """Direct, accept, start, really act on the simulator, report success."""
        cid = await self.direct(action)
        await self._add(
            ev.StepStarted,
            ev.StepStartedPayload(
                action=action, idempotency_key=cid, executor_id="test", fencing_token=1
            ),
            EXECUTOR,
            cid,
        )
        started = time.perf_counter()
        result = await act(action, adapters, cid)
        await self._add(
            ev.StepSucceeded,
            ev.StepSucceededPayload(
                action=action,
                result=result,
                summary=f"{action.action.value} done",
                duration_ms=(time.perf_counter() - started) * 1000,
            ),
            EXECUTOR,
            cid,
        )
        return cid

    async def resume(self) -> None:
        await self._add(ev.ResumeDirected, ev.ResumeDirectedPayload(detail="go on"), ALICE)


async def act(action: Action, adapters: Adapters, key: str) -> ActionResult:
    if isinstance(action, DisableFlagRule):
        return await adapters.flags.disable_rule(
            action.flag, action.rule, action.region, idempotency_key=key
        )
    if isinstance(action, DrainWorkerPool):
        return await adapters.orchestrator.drain_pool(
            action.pool, action.region, idempotency_key=key
        )
    if isinstance(action, RestartDependencyTier):
        return await adapters.orchestrator.restart_tier(
            action.tier, action.region, idempotency_key=key
        )
    raise ValueError(f"not a step: {action}")


async def read_log(bootstrap: str, topics: Topics) -> list[ev.Envelope]:
    """Every trusted event on the events topic right now (read as the SRE principal)."""
    identities = current()
    trust = identities.reader(bootstrap, topics)
    consumer = AIOKafkaConsumer(
        topics.events,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        **identities.kafka_options("sre"),
    )
    await consumer.start()
    try:
        partitions = consumer.assignment()
        while not partitions:
            await asyncio.sleep(0.05)
            partitions = consumer.assignment()
        end = await consumer.end_offsets(list(partitions))
        out: list[ev.Envelope] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in partitions])

        while await behind():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    try:
                        out.append(trust.open(r).event)
                    except UnreadableRecord:
                        continue
        return out
    finally:
        await consumer.stop()


async def wait_for_snapshots(
    bootstrap: str, topics: Topics, correlation_ids: set[str], timeout: float = 60.0
) -> list[ev.VerificationSnapshot]:
    deadline = time.monotonic() + timeout
    while True:
        events = await read_log(bootstrap, topics)
        snaps = [
            e
            for e in events
            if isinstance(e, ev.VerificationSnapshot) and e.correlation_id in correlation_ids
        ]
        if {s.correlation_id for s in snaps} >= correlation_ids:
            return snaps
        if time.monotonic() > deadline:
            raise AssertionError(f"no snapshot for {correlation_ids} after {timeout}s")
        await asyncio.sleep(0.5)


async def incident_state(bootstrap: str, topics: Topics, incident_id: str) -> IncidentState:
    return fold(await read_log(bootstrap, topics), incident_id)
