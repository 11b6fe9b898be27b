"""Drives a real executor process over real Kafka, PostgreSQL and the simulator:
events are written straight to Kafka with EventProducer (no directive API), through
the real signing path: the driver logs in and signs as the directive-api principal of
the session's test keyring, as the API itself would."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from fixtures_services import Proc, free_port
from kafka_support import Identities, LedgerWriter

from conn_core.authority import parse_authority
from conn_core.fold import fold
from conn_core.state import IncidentState
from conn_runtime.kafka import EventProducer
from conn_runtime.settings import Topics
from conn_schemas import events as ev
from conn_schemas.codec import UnreadableRecord
from conn_schemas.values import Action, Actor, Expectation, Role

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "runbooks" / "checkout-authority.yaml"

ALICE = Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command")
MALLORY = Actor(kind="human", id="mallory", roles=(Role.COMMANDER,), team="incident-command")
DRIVER = "directive-api"
"""The principal the driver signs as (the events it writes are the API's to write)."""
DANA = Actor(kind="human", id="dana", roles=(Role.SPECIALIST,), team="database-platform")
TEST = Actor.service("test-driver")
VERIFIER = Actor.service("verifier")
PACKAGER = Actor.service("packager")

Event = ev.Envelope


def partition_for(incident_id: str, partitions: int) -> int:
    """Where Kafka's default partitioner puts key `incident_id` (the test's own oracle)."""
    return int(murmur2(incident_id.encode()) & 0x7FFFFFFF) % partitions


def cid() -> str:
    return f"d-{uuid.uuid4().hex[:10]}"


class Harness:
    def __init__(
        self,
        *,
        kafka_bootstrap: str,
        topics: Topics,
        database_url: str,
        simulator: Proc,
        start_process: Callable[..., Proc],
        trust: Identities,
    ) -> None:
        self.bootstrap = kafka_bootstrap
        self.topics = topics
        self.prefix = topics.events.removesuffix("conn.events")
        self.dsn = database_url
        self.sim = simulator
        self._start_process = start_process
        self.trust = trust
        self.kafka = trust.settings(kafka_bootstrap, self.prefix, DRIVER)
        self.producer = EventProducer(self.kafka, producer_name="test-driver")
        self.writer = LedgerWriter(trust, kafka_bootstrap, topics)
        """Any other event type, as its rightful producer writes and signs it."""
        self.reader_trust = trust.reader(kafka_bootstrap, self.prefix)
        self.group = f"{self.prefix}conn-executor"
        self._reader: AIOKafkaConsumer[Any, Any] | None = None
        self.log: list[Event] = []

    async def start(self) -> None:
        await self.producer.start()
        reader: AIOKafkaConsumer[Any, Any] = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            **self.trust.kafka_options("sre"),
        )
        await reader.start()
        await reader._client.set_topics([self.topics.events])  # load metadata
        parts = reader.partitions_for_topic(self.topics.events) or set()
        assert parts, f"topic {self.topics.events} has no partitions"
        tps = [TopicPartition(self.topics.events, p) for p in sorted(parts)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        self._reader = reader

    async def partitions(self) -> list[int]:
        """Partitions of the events topic."""
        assert self._reader is not None
        return sorted(tp.partition for tp in self._reader.assignment())

    async def stop(self) -> None:
        await self.producer.stop()
        await self.writer.stop()
        if self._reader is not None:
            await self._reader.stop()

    # -- processes ------------------------------------------------------------------

    def start_executor(
        self, name: str = "executor", *, fault: str = "", env: dict[str, str] | None = None
    ) -> Proc:
        port = free_port()
        env = {
            **self.trust.env("executor"),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "CONN_TOPIC_PREFIX": self.prefix,
            "DATABASE_URL": self.dsn,
            "CONN_SIMULATOR_URL": self.sim.url,
            "CONN_EXECUTOR_ID": f"{name}-{uuid.uuid4().hex[:6]}",
            "CONN_EXECUTOR_GROUP_ID": self.group,
            "CONN_EXECUTOR_METRICS_PORT": str(port),
            "CONN_EXECUTOR_FAULT": fault,
            **(env or {}),
        }
        return self._start_process(
            name, "conn_executor", env=env, port=port, health_path="/readyz", timeout=60
        )

    # -- writing --------------------------------------------------------------------

    async def append(self, event: Event) -> None:
        await self.producer.append(event)

    async def open_incident(self, incident_id: str, holder: str = "alice") -> None:
        authority, digest = parse_authority(RUNBOOK.read_bytes(), holder=holder)
        await self.producer.append_many(
            [
                ev.new_event(
                    ev.IncidentOpened,
                    incident_id=incident_id,
                    payload=ev.IncidentOpenedPayload(title="checkout failing", service="checkout"),
                    actor=ALICE,
                    producer=DRIVER,
                ),
                ev.new_event(
                    ev.AuthorityDeclared,
                    incident_id=incident_id,
                    payload=ev.AuthorityDeclaredPayload(
                        authority=authority, source_file=RUNBOOK.name, content_sha256=digest
                    ),
                    actor=ALICE,
                    producer=DRIVER,
                ),
            ]
        )

    def directive(
        self,
        incident_id: str,
        action: Action,
        *,
        correlation_id: str,
        based_on: int,
        actor: Actor = ALICE,
        expectation: Expectation | None = None,
    ) -> ev.DirectiveIssued:
        return ev.new_event(
            ev.DirectiveIssued,
            incident_id=incident_id,
            payload=ev.DirectiveIssuedPayload(
                action=action, expectation=expectation, based_on_sequence=based_on
            ),
            actor=actor,
            producer=DRIVER,
            correlation_id=correlation_id,
        )

    async def issue(
        self,
        incident_id: str,
        action: Action,
        *,
        correlation_id: str | None = None,
        actor: Actor = ALICE,
        expectation: Expectation | None = None,
        copies: int = 1,
    ) -> str:
        """Issue a directive based on the incident's current ledger position."""
        key = correlation_id or cid()
        based_on = (await self.state(incident_id)).sequence
        event = self.directive(
            incident_id,
            action,
            correlation_id=key,
            based_on=based_on,
            actor=actor,
            expectation=expectation,
        )
        if copies == 1:
            await self.producer.append(event)
        else:
            await self.producer.append_many([event] * copies)
        return key

    async def record(
        self,
        incident_id: str,
        cls: type[Event],
        payload: Any,
        *,
        actor: Actor = ALICE,
        correlation_id: str | None = None,
    ) -> Event:
        """Append one event of `cls` as `actor` (what the API / a service would write),
        signed by the principal entitled to its type (a service writes as itself).
        Returns the event exactly as written."""
        event = ev.new_event(
            cls,
            incident_id=incident_id,
            payload=payload,
            actor=actor,
            producer=DRIVER,
            correlation_id=correlation_id,
        )
        return await self.writer.append(event)

    async def take_over(self, incident_id: str, actor: Actor = DANA) -> None:
        """Handoff -> a current packet (as the packager publishes it) -> acceptance."""
        team = actor.team or "database-platform"
        await self.record(
            incident_id, ev.TakeoverRequested, ev.TakeoverRequestedPayload(to_team=team)
        )
        basis = (await self.state(incident_id)).sequence
        sha = uuid.uuid4().hex * 2
        await self.record(
            incident_id,
            ev.TakeoverPacketPublished,
            ev.TakeoverPacketPublishedPayload(
                packet_id=f"{incident_id}@{basis}:handoff",
                packet_sha256=sha,
                to_team=team,
                trigger="handoff",
                ledger_sequence=basis,
                ledger_hash="0" * 64,
            ),
            actor=PACKAGER,
        )
        await self.record(
            incident_id,
            ev.TakeoverAccepted,
            ev.TakeoverAcceptedPayload(team=team, packet_sha256=sha),
            actor=actor,
        )

    async def declare(self, incident_id: str, content: bytes, actor: Actor = ALICE) -> None:
        authority, digest = parse_authority(content, holder=actor.id)
        await self.record(
            incident_id,
            ev.AuthorityDeclared,
            ev.AuthorityDeclaredPayload(
                authority=authority, source_file="narrower.yaml", content_sha256=digest
            ),
            actor=actor,
        )

    # -- processes: pausing ----------------------------------------------------------

    @staticmethod
    def pause(proc: Proc) -> None:
        """SIGSTOP the process group (a frozen VM, a long GC pause, a debugger)."""
        assert proc.popen is not None
        os.killpg(proc.popen.pid, signal.SIGSTOP)

    async def group_members(self) -> int:
        """Members of the executors' consumer group, as the group coordinator sees it."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, **self.trust.kafka_options("admin")
        )
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([self.group])
            (group,) = response.to_object()["groups"]
            return len(group["members"])
        finally:
            await admin.close()

    @staticmethod
    def unpause(proc: Proc) -> None:
        assert proc.popen is not None
        os.killpg(proc.popen.pid, signal.SIGCONT)

    # -- reading --------------------------------------------------------------------

    async def read(self) -> list[Event]:
        """Every trusted event on conn.events so far (accumulated, in partition order):
        what the services see; unreadable or untrusted records, and records off their
        incident's partition, are left out as they do."""
        assert self._reader is not None
        reader = self._reader
        tps = list(reader.assignment())
        ends = await reader.end_offsets(tps)
        while True:
            batch = await reader.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        event = self.reader_trust.open(record).event
                    except UnreadableRecord:
                        continue
                    if partition_for(event.incident_id, len(tps)) == record.partition:
                        self.log.append(event)
            positions = {tp: await reader.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                return self.log

    async def events(self, incident_id: str, correlation_id: str | None = None) -> list[Event]:
        return [
            e
            for e in await self.read()
            if e.incident_id == incident_id
            and (correlation_id is None or e.correlation_id == correlation_id)
        ]

    async def state(self, incident_id: str) -> IncidentState:
        return fold(await self.read(), incident_id)

    async def wait_for(
        self,
        incident_id: str,
        predicate: Callable[[list[Event]], bool],
        *,
        what: str,
        timeout: float = 60.0,
        procs: tuple[Proc, ...] = (),
    ) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            events = await self.events(incident_id)
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.log_tail(30)}" for p in procs)
                types = [(e.event_type, e.correlation_id) for e in events]
                raise AssertionError(f"timed out waiting for {what}; events: {types}\n{tails}")
            await asyncio.sleep(0.3)

    # -- simulator and database -----------------------------------------------------------

    async def side_effects(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(self.sim.url + "/sim/side-effects")
            r.raise_for_status()
            return dict(r.json())

    async def claim_status(self, correlation_id: str) -> str | None:
        conn = await asyncpg.connect(self.dsn)
        try:
            value = await conn.fetchval(
                "SELECT status FROM executor_claims WHERE correlation_id = $1", correlation_id
            )
            return None if value is None else str(value)
        finally:
            await conn.close()


def of_type(events: list[Event], event_type: str, correlation_id: str | None = None) -> list[Event]:
    return [
        e
        for e in events
        if e.event_type == event_type
        and (correlation_id is None or e.correlation_id == correlation_id)
    ]


def has(event_type: str, correlation_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: bool(of_type(events, event_type, correlation_id))


def decided(correlation_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: bool(
        of_type(events, "DirectiveAccepted", correlation_id)
        or of_type(events, "DirectiveRefused", correlation_id)
    )


def step_recorded(correlation_id: str) -> Callable[[list[Event]], bool]:
    """The step's outcome and its incident-record update are both in the log."""
    return lambda events: any(
        e.event_type == "IncidentRecordUpdated" and e.correlation_id == correlation_id
        for e in events
    )
