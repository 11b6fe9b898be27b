"""What the pipeline benchmarks share: the local stack, a fresh database and topic
set per run, the Conn pipeline as real processes, an API client acting as the
commander, and a raw aiokafka tap on the events topic that timestamps arrivals.

Everything started here is stopped (and its topics and database dropped) on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import console, fresh_topics, login
from conn_localstack.ephemeral import LOGS, Pipeline
from conn_runtime.db import temporary_database
from conn_runtime.partitions import topic_partitions
from conn_runtime.settings import Topics

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIO = BENCH / "bench_platform.yaml"
AUTHORITY = BENCH / "bench_authority.yaml"
DEV_TOKENS = ROOT / "deploy" / "local" / "tokens.dev.yaml"
TIERS = [f"tier-{i:02d}" for i in range(12)]
REGIONS = ["us-east", "eu-west"]
TARGETS = [(t, r) for t in TIERS for r in REGIONS]
"""24 tier/region pairs of bench_platform.yaml: one per concurrently active incident."""


# --- the local stack ---------------------------------------------------------------------


async def ensure_stack() -> tuple[str, str]:
    """(Kafka bootstrap, PostgreSQL DSN): from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL if
    set, else the local stack (started if needed: postgres, kafka, topics)."""
    env_kafka, env_db = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("DATABASE_URL")
    if env_kafka and env_db:
        return env_kafka, env_db
    from conn_localstack import database_url, kafka_bootstrap, stack_up

    await stack_up(["postgres", "kafka", "topics"], echo=lambda m: console.print(f"[dim]{m}[/dim]"))
    return env_kafka or kafka_bootstrap(), env_db or database_url()


@contextlib.asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    """A new empty database on the same server, dropped on exit."""
    async with temporary_database(dsn, prefix="bench") as url:
        yield url


async def delete_prefixed_topics(bootstrap: str, prefix: str) -> None:
    """Best effort: every topic under the run's prefix (incl. faust changelogs)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **login("admin"))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the figures
        console.print(f"[yellow]could not delete topics under {prefix}: {exc}[/yellow]")
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def scratch_topics(bootstrap: str, *, events_partitions: int = 6) -> AsyncIterator[Topics]:
    topics = await fresh_topics(bootstrap, events_partitions=events_partitions)
    try:
        yield topics
    finally:
        await delete_prefixed_topics(bootstrap, topics.events.removesuffix("conn.events"))


@contextlib.asynccontextmanager
async def _tempdir() -> AsyncIterator[str]:
    path = tempfile.mkdtemp(prefix="conn-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_pipeline(
    bootstrap: str,
    dsn: str,
    name: str,
    *,
    executors: int = 1,
    extra_env: dict[str, str] | None = None,
    speed: float = 60.0,
) -> AsyncIterator[tuple[Pipeline, Topics]]:
    """Simulator (bench_platform) + packager + verifier + N executors + API on a fresh
    6-partition topic set and a fresh database; all stopped and dropped on exit."""
    async with (
        scratch_topics(bootstrap) as topics,
        fresh_database(dsn) as db,
        _tempdir() as datadir,
    ):
        prefix = topics.events.removesuffix("conn.events")
        pipeline = Pipeline(
            kafka_bootstrap=bootstrap,
            database_url=db,
            topic_prefix=prefix,
            scenario=str(SCENARIO),
            speed=speed,
            executors=executors,
            log_dir=LOGS / "bench" / name,
            extra_env={
                "CONN_LOG_LEVEL": "WARNING",
                "CONN_PACKAGER_DATADIR": datadir,  # faust's local data, removed on exit
                **(extra_env or {}),
            },
        )
        try:
            started = time.perf_counter()
            await asyncio.to_thread(pipeline.start, 90.0)
            console.print(
                f"[dim]pipeline up in {time.perf_counter() - started:.1f}s "
                f"({executors} executor(s), prefix {prefix}, logs {pipeline.log_dir})[/dim]"
            )
            yield pipeline, topics
        finally:
            await asyncio.to_thread(pipeline.stop)


# --- the commander --------------------------------------------------------------------------


def tokens() -> dict[str, str]:
    data = yaml.safe_load(DEV_TOKENS.read_text())
    return {str(k): str(v) for k, v in data.items()}


class Refused(RuntimeError):
    def __init__(self, status: int, body: str, retry_after: str | None = None) -> None:
        super().__init__(f"{status}: {body[:300]}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


RETRY_BASE_SECONDS = 0.02
RETRY_CAP_SECONDS = 0.5


def backoff(attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Pause before re-sending after the `attempt`-th refusal: 20 ms doubling up to
    0.5 s, each drawn in [half, full] (jitter: retries of many clients spread out)."""
    ceiling = min(RETRY_BASE_SECONDS * 2**attempt, RETRY_CAP_SECONDS)
    return rng(ceiling / 2, ceiling)


def shed_wait(
    retry_after: str | None,
    cap: float,
    rng: Callable[[float, float], float] = random.uniform,
) -> float:
    """Pause before re-sending a shed request: its Retry-After in seconds (1 s if missing
    or unreadable), at most `cap`, plus up to 25 % jitter (never less than asked)."""
    value = (retry_after or "").strip()
    wait = min(float(value) if value.isdigit() else 1.0, cap)
    return wait + rng(0.0, wait / 4)


@dataclass
class Commander:
    """HTTP calls to the directive API as alice (commander) or root (admin)."""

    api_url: str
    limits: int = 256
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def client(self, who: str = "alice") -> httpx.AsyncClient:
        if who not in self._clients:
            self._clients[who] = httpx.AsyncClient(
                base_url=self.api_url,
                headers={"Authorization": f"Bearer {tokens()[who]}"},
                timeout=30,
                limits=httpx.Limits(
                    max_connections=self.limits, max_keepalive_connections=self.limits
                ),
            )
        return self._clients[who]

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()

    async def _post(self, path: str, body: dict[str, Any], who: str = "alice", **kw: Any) -> Any:
        resp = await self.client(who).post(path, json=body, **kw)
        if resp.status_code >= 300:
            raise Refused(resp.status_code, resp.text, resp.headers.get("Retry-After"))
        return resp.json()

    async def open(self, incident_id: str) -> None:
        await self._post(
            "/v1/incidents",
            {"title": "bench", "service": "checkout", "incident_id": incident_id},
        )
        await self._post(
            f"/v1/incidents/{incident_id}/authority",
            {"content": AUTHORITY.read_text(), "source_file": "bench/bench_authority.yaml"},
        )

    async def direct(
        self, incident_id: str, action: dict[str, Any], based_on: int, key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        body = {"action": action, "based_on_sequence": based_on}
        result: dict[str, Any] = await self._post(
            f"/v1/incidents/{incident_id}/directives", body, headers=headers
        )
        return result

    async def direct_retrying(
        self,
        incident_id: str,
        action: dict[str, Any],
        based_on: int | Callable[[], int],
        *,
        attempts: int = 50,
        retry_shed: bool = True,
        max_shed_wait: float = 5.0,
    ) -> tuple[dict[str, Any], int]:
        """As a commander would: if the API has not folded the position the directive is
        based on yet (invalid_base_position, 422), re-send shortly; if the state moved on
        since the position the commander read (stale_base_position, 409: e.g. the tap has
        not seen the incident's authority yet), re-read it (`based_on` may be a callable
        reading the tap) and re-send. A 429 or 503 `overloaded` (nothing was done) is
        re-sent after its Retry-After (at most `max_shed_wait`, plus jitter), unless
        `retry_shed` is False: then it is raised (an open-loop client counts it shed). Re-sends back off exponentially
        with jitter (`backoff`): a fixed short pause turns a busy API's refusals into a
        flood of retries. Returns (answer, retries)."""

        def base() -> int:
            return based_on() if callable(based_on) else based_on

        for attempt in range(attempts):
            try:
                return await self.direct(incident_id, action, base()), attempt
            except Refused as exc:
                if retry_shed and exc.status in (429, 503) and "overloaded" in exc.body:
                    await asyncio.sleep(shed_wait(exc.retry_after, max_shed_wait))
                    continue
                retry = (exc.status == 422 and "invalid_base_position" in exc.body) or (
                    exc.status == 409 and "stale_base_position" in exc.body and callable(based_on)
                )
                if not retry:
                    raise
                await asyncio.sleep(backoff(attempt))
        return await self.direct(incident_id, action, base()), attempts

    async def hold(self, incident_id: str) -> Any:
        return await self._post(f"/v1/incidents/{incident_id}/hold", {"detail": "bench"})

    async def resume(self, incident_id: str) -> Any:
        return await self._post(f"/v1/incidents/{incident_id}/resume", {"detail": "bench"})

    async def kill_switch(self, engage: bool) -> Any:
        verb = "engage" if engage else "release"
        return await self._post(f"/v1/kill-switch/{verb}", {"reason": "bench"}, who="root")


def record_action(note: str) -> dict[str, Any]:
    return {"action": "update_incident_record", "note": note}


def gather_action(region: str) -> dict[str, Any]:
    return {"action": "gather_state", "regions": [region]}


def restart_action(tier: str, region: str) -> dict[str, Any]:
    return {"action": "restart_dependency_tier", "tier": tier, "region": region}


# --- the tap ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One record of the events topic as the tap saw it."""

    arrived: float  # time.perf_counter() of arrival at the tap
    event_type: str
    incident_id: str
    correlation_id: str | None
    occurred_at: str
    payload: dict[str, Any]


STATE_CHANGING = frozenset(
    {
        "IncidentOpened",
        "AuthorityDeclared",
        "StateGathered",
        "StepStarted",
        "StepSucceeded",
        "StepFailed",
        "StepOutcomeUnknown",
        "VerificationSnapshot",
        "DirectiveRefused",
        "HoldDeclared",
        "ResumeDirected",
        "TakeoverAccepted",
    }
)
"""Event types after which conn_core.fold moves `state_changed_at` (a superset is safe)."""


class EventTap:
    """A raw aiokafka consumer (no group) on the events topic that timestamps each record's
    arrival with `time.perf_counter()`, counts events per incident (= the ledger sequence)
    and lets callers await a (correlation_id, event_type)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: list[Seen] = []
        self.first: dict[tuple[str, str], Seen] = {}
        self.sequence: defaultdict[str, int] = defaultdict(int)
        self.changed_at: defaultdict[str, int] = defaultdict(int)
        """Per incident: the sequence of the last event that (may) change the bridge state;
        a directive based on it is never stale, and the API has usually folded it."""
        self._waiters: defaultdict[tuple[str, str], list[asyncio.Future[Seen]]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> EventTap:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, **login("sre")
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 30
            parts = None
            while not parts:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {self.topic} has no partitions")
                parts = await topic_partitions(consumer, self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, begins[tp])
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    self._add(now, rec.value)

    def _add(self, now: float, value: bytes | None) -> None:
        try:
            doc = orjson.loads(value or b"")
            seen = Seen(
                arrived=now,
                event_type=str(doc["event_type"]),
                incident_id=str(doc["incident_id"]),
                correlation_id=doc.get("correlation_id"),
                occurred_at=str(doc.get("occurred_at")),
                payload=doc.get("payload") or {},
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        self.seen.append(seen)
        self.sequence[seen.incident_id] += 1
        if seen.event_type in STATE_CHANGING:
            self.changed_at[seen.incident_id] = self.sequence[seen.incident_id]
        if seen.correlation_id is None:
            return
        key = (seen.correlation_id, seen.event_type)
        if key not in self.first:
            self.first[key] = seen
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                fut.set_result(seen)

    async def wait(self, correlation_id: str, *event_types: str, within: float = 30.0) -> Seen:
        """The first of `event_types` for this correlation id (already seen or to come)."""
        for t in event_types:
            if (correlation_id, t) in self.first:
                return self.first[(correlation_id, t)]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Seen] = loop.create_future()
        for t in event_types:
            self._waiters[(correlation_id, t)].append(fut)
        try:
            return await asyncio.wait_for(fut, within)
        finally:
            for t in event_types:
                waiters = self._waiters.get((correlation_id, t))
                if waiters and fut in waiters:
                    waiters.remove(fut)

    def of_type(self, *event_types: str) -> list[Seen]:
        return [s for s in self.seen if s.event_type in event_types]


@contextlib.asynccontextmanager
async def tap(bootstrap: str, topic: str) -> AsyncIterator[EventTap]:
    t = await EventTap(bootstrap, topic).start()
    try:
        yield t
    finally:
        await t.stop()


def new_incident_id(tag: str, i: int) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:6]}-{i:04d}"
