"""The fault-run driver shared by the full (`make chaos`) and reduced (`make test`)
fault suites.

`run_chaos(pipeline, config, stack=...)` drives several incidents concurrently
through the directive API (open, declare authority, gather, record, disable the
canary rule, verify, restart tiers, resume after holds), while an injector
SIGKILLs the executor(s), verifier and packager at random points (seeded), and
inserts the other faults: a Kafka broker restart and a PostgreSQL restart (only
when the suite owns the local stack), duplicate submissions (same
Idempotency-Key), DirectiveIssued records re-produced by hand onto conn.events,
and malformed/hostile records. It then waits (bounded) for quiescence and
measures, from the simulator and the log itself:

- duplicate side effects: idempotency keys the simulator counted more than once,
  and side effects whose key maps to no directive in the log;
- events lost: differences reported by `conn replay` (fresh rebuild vs. the live
  read model) plus directives without exactly one decision, steps without exactly
  one outcome, accepted work without its result;
- stuck incidents: neither verified (no consequential step left unverified) nor
  on hold with a takeover packet published after the hold;
- hostile records not dead-lettered, and records dead-lettered that were not hostile.

Nothing here asserts on time; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from hostile import Hostile, forged_records, hostile_records
from kafka_support import current
from rich.console import Console
from rich.table import Table

from conn_core.fold import evolve
from conn_core.state import DirectiveStatus, IncidentState
from conn_localstack.ephemeral import Pipeline, Proc
from conn_runtime.kafka import EventProducer, Position
from conn_runtime.settings import Topics
from conn_runtime.trust import RawRecord, Trust
from conn_schemas.codec import UnreadableRecord
from conn_schemas.events import (
    DirectiveAccepted,
    DirectiveIssued,
    DirectiveRefused,
    Envelope,
    IncidentRecordUpdated,
    StateGathered,
    StepFailed,
    StepOutcomeUnknown,
    StepStarted,
    StepSucceeded,
    TakeoverPacketPublished,
    VerificationSnapshot,
)
from conn_schemas.values import CONSEQUENTIAL_ACTIONS, ActionType

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).resolve().parent / "chaos_outage.yaml"
TOKENS = yaml.safe_load((ROOT / "deploy" / "local" / "tokens.dev.yaml").read_text())
REGIONS = ("us-east", "eu-west")
KILLABLE = ("executor", "verifier", "packager")

StackAction = Callable[[], Awaitable[float]]
"""Restart a piece of the shared stack; returns its downtime in seconds."""


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    kills: int
    """SIGKILLs of executor/verifier/packager to inject (the run lasts until done)."""
    workers: int = 3
    """Incidents driven concurrently."""
    kill_gap: tuple[float, float] = (1.0, 3.0)
    """Seconds between kills (uniform)."""
    restart_delay: tuple[float, float] = (0.0, 1.0)
    """Seconds a killed process stays down before it is restarted."""
    targeted: float = 0.4
    """Share of executor kills aimed just after a consequential directive is issued."""
    duplicate_share: float = 0.25
    """Share of directives submitted twice with the same Idempotency-Key."""
    replay_rounds: int = 2
    replay_per_round: int = 4
    hostile_rounds: int = 1
    kafka_restart: bool = True
    postgres_restart: bool = True
    step_timeout: float = 45.0
    quiesce_timeout: float = 120.0
    min_incidents: int = 4


@dataclass
class ChaosReport:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    incidents: int = 0
    directives_issued: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    side_effects: int = 0
    duplicate_side_effects: int = 0
    unexplained_side_effects: int = 0
    duplicate_submission_mismatches: int = 0
    replay_differences: int = 0
    replay_output: str = ""
    missing_decisions: int = 0
    extra_decisions: int = 0
    missing_outcomes: int = 0
    extra_outcomes: int = 0
    lost_results: int = 0
    stuck_incidents: int = 0
    hostile_not_deadlettered: int = 0
    innocent_deadlettered: int = 0
    duplicate_packets: int = 0
    holds: int = 0
    outcome_unknown: int = 0
    quiesced: bool = False
    restart_retries: int = 0
    """Process restarts that failed and were retried (e.g. during a broker restart)."""
    records_seen: int = 0
    quiesce_seconds: float = 0.0
    duration_seconds: float = 0.0
    downtime: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Workload remarks (e.g. a step slower than its wait), not failures."""

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())

    @property
    def lost(self) -> int:
        return (
            self.replay_differences
            + self.missing_decisions
            + self.extra_decisions
            + self.missing_outcomes
            + self.extra_outcomes
            + self.lost_results
        )

    @property
    def duplicates(self) -> int:
        return self.duplicate_side_effects + self.unexplained_side_effects

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.lost == 0
            and self.stuck_incidents == 0
            and self.duplicate_submission_mismatches == 0
            and self.hostile_not_deadlettered == 0
            and self.innocent_deadlettered == 0
        )

    def figures(self) -> dict[str, Any]:
        d = asdict(self)
        d["faults"] = dict(self.faults)
        d["refusals"] = dict(self.refusals)
        d.update(
            faults_injected=self.faults_injected,
            duplicates=self.duplicates,
            lost=self.lost,
            ok=self.ok,
        )
        return d


# --- reading topics ---------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def read_topic(bootstrap: str, topic: str, *, at_least: int = 0) -> list[Raw]:
    """Every record of `topic` up to its current end, per partition in offset order.
    Retries (bounded) while the broker is unreachable or answers with fewer than
    `at_least` records (e.g. right after a broker restart, before its logs loaded)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            out = await _read_topic_once(bootstrap, topic)
            if len(out) >= at_least or time.monotonic() > deadline:
                return out
        except (KafkaError, RuntimeError, OSError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


async def _read_topic_once(bootstrap: str, topic: str) -> list[Raw]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=4_000_000,
        **current().kafka_options("sre"),
    )
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp in tps:
            # An explicit seek: seek_to_beginning() after end_offsets() on a fresh
            # assignment leaves aiokafka fetching from the end (nothing).
            consumer.seek(tp, begins[tp])
        out: list[Raw] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 60
        idle = 0
        while remaining:
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic} to its end")
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset < ends[tp]:
                        out.append(
                            Raw(tp.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
                        )
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if not batch:
                # Only after empty fetches: position() counts prefetched records too.
                idle += 1
                for tp in list(remaining):
                    if idle >= 3 and await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            else:
                idle = 0
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.set_topics([topic])
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await asyncio.sleep(0.2)
    raise RuntimeError(f"topic {topic} has no partitions")


def decode_all(raws: list[Raw], trust: Trust) -> tuple[list[Envelope], list[Raw]]:
    """The trusted events (what every service folds), and the records refused."""
    events: list[Envelope] = []
    unreadable: list[Raw] = []
    for r in sorted(raws, key=lambda r: (r.partition, r.offset)):
        try:
            events.append(trust.open(_record(trust, r)).event)
        except UnreadableRecord:
            unreadable.append(r)
    return events, unreadable


def _record(trust: Trust, r: Raw) -> RawRecord:
    return RawRecord(trust.topics.events, r.partition, r.offset, r.key, r.value, r.headers)


# --- the workload -----------------------------------------------------------------------


class Retryable(Exception):
    pass


class Bridge:
    """One commander's HTTP client with retries (same Idempotency-Key) across outages."""

    def __init__(self, api_url: str, report: ChaosReport, rng: random.Random) -> None:
        self.http = httpx.AsyncClient(base_url=api_url, timeout=30)
        self.report = report
        self.rng = rng

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        who: str = "alice",
        json: Any = None,
        key: str | None = None,
        params: dict[str, Any] | None = None,
        deadline: float = 90.0,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"}
        if key:
            headers["Idempotency-Key"] = key
        end = time.monotonic() + deadline
        delay = 0.2
        while True:
            try:
                resp = await self.http.request(
                    method, path, json=json, headers=headers, params=params
                )
                if resp.status_code < 500 and not _in_progress(resp):
                    return resp
                err = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                err = repr(exc)
            if time.monotonic() > end:
                raise Retryable(f"{method} {path}: gave up: {err}")
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 1.5)

    async def incident(self, iid: str) -> dict[str, Any]:
        return dict((await self.call("GET", f"/v1/incidents/{iid}")).json())

    async def ledger(self, iid: str, **params: Any) -> list[dict[str, Any]]:
        resp = await self.call(
            "GET", f"/v1/incidents/{iid}/ledger", params={"limit": 1000, **params}
        )
        return list(resp.json().get("items", [])) if resp.status_code == 200 else []


def _in_progress(resp: httpx.Response) -> bool:
    if resp.status_code != 409:
        return False
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return bool(resp.json()["error"]["code"] == "idempotency_in_progress")
    return False


def _plan(rng: random.Random) -> list[dict[str, Any]]:
    """One incident's directives: non-conflicting reads/records interleaved with
    consequential steps on the shared simulator (conflicts there are refusals or
    holds, which is correct behaviour)."""
    r1, r2 = rng.choice(REGIONS), rng.choice(REGIONS)
    steps: list[dict[str, Any]] = [
        {"action": "gather_state", "regions": list(REGIONS)},
        {"action": "update_incident_record", "note": "chaos: bridge opened"},
        {
            "action": "disable_flag_rule",
            "flag": "checkout-pricing",
            "rule": "canary-10pct",
            "region": r1,
        },
        {"action": "verify", "regions": []},
        {"action": "restart_dependency_tier", "tier": "pricing-cache", "region": r2},
        {"action": "update_incident_record", "note": "chaos: after the restart"},
        {
            "action": "restart_dependency_tier",
            "tier": "inventory-api",
            "region": rng.choice(REGIONS),
        },
        {"action": "gather_state", "regions": [rng.choice(REGIONS)]},
    ]
    if rng.random() < 0.3:
        steps.insert(4, {"action": "drain_worker_pool", "pool": "checkout-workers", "region": r1})
    return steps


TERMINAL: dict[str, tuple[type[Envelope], ...]] = {
    "gather_state": (DirectiveRefused, StateGathered),
    "update_incident_record": (DirectiveRefused, IncidentRecordUpdated),
    "verify": (DirectiveRefused, VerificationSnapshot),
}
CONSEQUENTIAL_TERMINAL = (DirectiveRefused, VerificationSnapshot, StepFailed)


class Workload:
    def __init__(
        self, pipeline: Pipeline, config: ChaosConfig, report: ChaosReport, rng: random.Random
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.report = report
        self.rng = rng
        self.stop = asyncio.Event()
        self.incident_ids: list[str] = []
        self.consequential_issued: asyncio.Queue[str] = asyncio.Queue(maxsize=100)
        self.run_id = uuid.uuid4().hex[:6]
        self.log: list[str] = []

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(i) for i in range(self.config.workers)))

    async def _worker(self, index: int) -> None:
        rng = random.Random(self.rng.random())
        bridge = Bridge(self.pipeline.api.url, self.report, rng)
        n = 0
        try:
            while not self.stop.is_set() or len(self.incident_ids) < self.config.min_incidents:
                n += 1
                iid = f"chaos-{self.run_id}-{index}-{n}"
                try:
                    await self._incident(bridge, rng, iid)
                except Retryable as exc:
                    self.log.append(f"{iid}: {exc}")
        finally:
            await bridge.aclose()

    async def _incident(self, bridge: Bridge, rng: random.Random, iid: str) -> None:
        resp = await bridge.call(
            "POST",
            "/v1/incidents",
            json={"title": "chaos", "service": "checkout", "severity": "sev2", "incident_id": iid},
        )
        if resp.status_code not in (201, 409):
            raise Retryable(f"open: {resp.status_code} {resp.text[:200]}")
        self.incident_ids.append(iid)
        self.report.incidents += 1
        resp = await bridge.call(
            "POST", f"/v1/incidents/{iid}/authority", json={"runbook": "checkout-authority"}
        )
        if resp.status_code != 201:
            raise Retryable(f"authority: {resp.status_code} {resp.text[:200]}")
        resumed_at = 0
        for action in _plan(rng):
            if self.stop.is_set():
                return
            outcome = await self._direct(bridge, rng, iid, action)
            if outcome == "stale":
                outcome = await self._direct(bridge, rng, iid, action)
            state = await bridge.incident(iid)
            if state.get("hold"):
                if not await self._wait_packet(bridge, iid, resumed_at):
                    return  # leave it on hold; the final check says whether a packet came
                if rng.random() < 0.2:
                    return  # the bridge leaves it with the specialists
                resumed_at = int((await bridge.incident(iid))["sequence"])
                resp = await bridge.call(
                    "POST", f"/v1/incidents/{iid}/resume", json={"detail": "chaos: resume"}
                )
                if resp.status_code != 200:
                    self.report.refusals[f"resume:{resp.status_code}"] += 1

    async def _direct(
        self, bridge: Bridge, rng: random.Random, iid: str, action: dict[str, Any]
    ) -> str:
        state = await bridge.incident(iid)
        body = {
            "action": action,
            "based_on_sequence": int(state["sequence"]),
            "rationale": "fault suite",
        }
        key = f"chaos-{uuid.uuid4().hex}"
        path = f"/v1/incidents/{iid}/directives"
        if rng.random() < self.config.duplicate_share:
            first, second = await asyncio.gather(
                bridge.call("POST", path, json=body, key=key),
                bridge.call("POST", path, json=body, key=key),
            )
            self.report.faults["duplicate submission"] += 1
            if (
                _correlation(first) != _correlation(second)
                or first.status_code != second.status_code
            ):
                self.report.duplicate_submission_mismatches += 1
                self.report.problems.append(
                    f"same Idempotency-Key, different answers: {first.status_code} "
                    f"{first.text[:150]} / {second.status_code} {second.text[:150]}"
                )
            resp = first
        else:
            resp = await bridge.call("POST", path, json=body, key=key)
        if resp.status_code != 202:
            code = _error_code(resp)
            self.report.refusals[f"api:{code}"] += 1
            return "stale" if code == "stale_base" else "refused"
        cid = str(resp.json()["correlation_id"])
        self.report.directives_issued += 1
        kind = action["action"]
        if kind in {a.value for a in CONSEQUENTIAL_ACTIONS}:
            with contextlib.suppress(asyncio.QueueFull):
                self.consequential_issued.put_nowait(cid)
        terminal = TERMINAL.get(kind, CONSEQUENTIAL_TERMINAL)
        names = {t.__name__ for t in terminal}
        end = time.monotonic() + self.config.step_timeout
        while time.monotonic() < end:
            items = await bridge.ledger(iid, correlation_id=cid)
            if any(i["event"]["event_type"] in names for i in items):
                return "done"
            await asyncio.sleep(0.3)
        self.log.append(f"{iid}: no result for {kind} {cid} within {self.config.step_timeout}s")
        return "timeout"

    async def _wait_packet(self, bridge: Bridge, iid: str, after: int) -> bool:
        end = time.monotonic() + self.config.step_timeout
        while time.monotonic() < end:
            items = await bridge.ledger(iid, event_type="TakeoverPacketPublished", after=after)
            if items:
                return True
            await asyncio.sleep(0.3)
        return False


def _correlation(resp: httpx.Response) -> str | None:
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        data = resp.json()
        if "correlation_id" in data:
            return str(data["correlation_id"])
        return str(data["error"]["detail"]["correlation_id"])
    return None


def _error_code(resp: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        return str(resp.json()["error"]["code"])
    return str(resp.status_code)


# --- the injector -----------------------------------------------------------------------


class Injector:
    def __init__(
        self,
        pipeline: Pipeline,
        config: ChaosConfig,
        report: ChaosReport,
        rng: random.Random,
        workload: Workload,
        stack: dict[str, StackAction],
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.report = report
        self.rng = rng
        self.workload = workload
        self.stack = stack
        # The attacker: another service with broker credentials that let it write
        # conn.events, and a signing key that entitles it to alerts and notes only.
        self.kafka = current().settings(
            pipeline.kafka_bootstrap, pipeline.topic_prefix, "example-integration"
        )
        self.trust = current().reader(pipeline.kafka_bootstrap, pipeline.topic_prefix)
        self.hostile_sent: list[tuple[Hostile, Position]] = []

    @property
    def topics(self) -> Topics:
        return self.kafka.topics

    def _targets(self) -> list[str]:
        return [n for n in self.pipeline.procs if n.split("-")[0] in KILLABLE]

    async def run(self) -> None:
        cfg = self.config
        kills = 0
        # Other faults land at fixed fractions of the kill budget.
        schedule: dict[int, list[str]] = defaultdict(list)

        def at(fraction: float, what: str) -> None:
            schedule[max(1, int(cfg.kills * fraction))].append(what)

        for i in range(cfg.replay_rounds):
            at((i + 1) / (cfg.replay_rounds + 1), "replay")
        for i in range(cfg.hostile_rounds):
            at((i + 0.5) / max(1, cfg.hostile_rounds), "hostile")
        if cfg.kafka_restart:
            at(0.4, "kafka")
        if cfg.postgres_restart:
            at(0.7, "postgres")
        for what, reason in (("kafka", cfg.kafka_restart), ("postgres", cfg.postgres_restart)):
            if reason and what not in self.stack:
                self.report.skipped.append(f"{what} restart skipped: {self.stack.get('why')}")
        try:
            while kills < cfg.kills:
                await asyncio.sleep(self.rng.uniform(*cfg.kill_gap))
                await self._kill()
                kills += 1
                for what in schedule.pop(kills, []):
                    await self._other(what)
        finally:
            self.workload.stop.set()
            await self.heal()

    async def _kill(self) -> None:
        targets = self._targets()
        name = self.rng.choice(targets)
        targeted = name.startswith("executor") and self.rng.random() < self.config.targeted
        if targeted:
            # Aim at the window between StepStarted and the outcome.
            while not self.workload.consequential_issued.empty():
                self.workload.consequential_issued.get_nowait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.workload.consequential_issued.get(), 15)
            await asyncio.sleep(self.rng.uniform(0.05, 1.2))
        proc = self.pipeline.procs[name]
        await asyncio.to_thread(proc.kill)
        kind = name.split("-")[0]
        self.report.faults[f"SIGKILL {kind}"] += 1
        await asyncio.sleep(self.rng.uniform(*self.config.restart_delay))
        await self._start(proc)

    async def _start(self, proc: Proc) -> None:
        """Start again (retrying while the broker or database is down, bounded)."""
        deadline = time.monotonic() + 240
        while True:
            try:
                await asyncio.to_thread(proc.start, 90.0)
                return
            except RuntimeError as exc:
                await asyncio.to_thread(proc.kill)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not restart {proc.name}: {exc}") from exc
                self.report.restart_retries += 1
                await asyncio.sleep(2)

    async def heal(self) -> None:
        """Every pipeline process alive again (after the last fault)."""
        for proc in self.pipeline.procs.values():
            if not proc.alive:
                await self._start(proc)

    async def _other(self, what: str) -> None:
        if what == "replay":
            await self.replay_by_hand()
        elif what == "hostile":
            await self.send_hostile()
        elif what in self.stack:
            downtime = await self.stack[what]()
            self.report.faults[f"{what} restart"] += 1
            self.report.downtime[what] = round(downtime, 2)

    async def replay_by_hand(self) -> None:
        """Re-produce existing DirectiveIssued records, byte for byte, with their genuine
        signature headers (a replay, not a forgery: trusted, and changes nothing)."""
        raws = await read_topic(self.pipeline.kafka_bootstrap, self.topics.events)
        issued = [r for r in raws if dict(r.headers).get("event_type") == b"DirectiveIssued"]
        chosen = self.rng.sample(issued, min(self.config.replay_per_round, len(issued)))
        async with EventProducer(self.kafka, producer_name="chaos-replayer") as producer:
            for r in chosen:
                await producer.publish(
                    self.topics.events, r.key, r.value, list(r.headers), sign=False
                )
                self.report.faults["DirectiveIssued replayed by hand"] += 1

    async def send_hostile(self) -> None:
        incidents = list(self.workload.incident_ids[-5:])
        records = hostile_records(self.rng, incidents)
        records += forged_records(self.rng, incidents, current().keys)
        async with EventProducer(self.kafka, producer_name="chaos-hostile") as producer:
            for h in records:
                if h.headers is None:  # malformed bytes, signed by a known key
                    pos = await producer.publish(self.topics.events, h.key, h.value, [])
                else:  # well-formed, forged signature or signer
                    pos = await producer.publish(
                        self.topics.events, h.key, h.value, list(h.headers), sign=False
                    )
                self.hostile_sent.append((h, pos))
                self.report.faults["forged record" if h.untrusted else "hostile record"] += 1


# --- checks -----------------------------------------------------------------------------


def _hold_starts(events: list[Envelope]) -> dict[str, tuple[IncidentState, int | None, int]]:
    """Incident -> (final state, sequence where the current hold began or None,
    highest ledger_sequence of a published packet)."""
    states: dict[str, IncidentState] = {}
    hold_start: dict[str, int | None] = {}
    packet_at: dict[str, int] = defaultdict(lambda: -1)
    for e in events:
        s = states.setdefault(e.incident_id, IncidentState(incident_id=e.incident_id))
        was = s.hold is not None
        evolve(s, e)
        if not was and s.hold is not None:
            hold_start[e.incident_id] = s.sequence
        elif s.hold is None:
            hold_start[e.incident_id] = None
        if isinstance(e, TakeoverPacketPublished):
            packet_at[e.incident_id] = max(packet_at[e.incident_id], e.payload.ledger_sequence)
    return {i: (s, hold_start.get(i), packet_at[i]) for i, s in states.items()}


def check_log(events: list[Envelope], report: ChaosReport, strict: bool) -> list[str]:
    """Decisions, outcomes, results and the end state of every incident.
    `strict=False` only returns what is still open (for the quiescence wait)."""
    issues: list[str] = []
    issued: dict[str, DirectiveIssued] = {}
    decisions: Counter[str] = Counter()
    started: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    results: dict[str, set[str]] = defaultdict(set)
    packets: Counter[tuple[str, int]] = Counter()
    for e in events:
        cid = e.correlation_id
        if isinstance(e, DirectiveIssued) and cid and cid not in issued:
            issued[cid] = e
        elif isinstance(e, DirectiveAccepted | DirectiveRefused) and cid in issued:
            decisions[cid] += 1
        elif isinstance(e, StepStarted) and cid:
            started[cid] += 1
        elif isinstance(e, StepSucceeded | StepFailed | StepOutcomeUnknown) and cid:
            outcomes[cid] += 1
        elif isinstance(e, TakeoverPacketPublished):
            packets[(e.incident_id, e.payload.ledger_sequence)] += 1
        if cid:
            results[cid].add(e.event_type)
    missing_dec = [c for c in issued if decisions[c] == 0]
    extra_dec = [c for c in issued if decisions[c] > 1]
    missing_out = [c for c in started if outcomes[c] == 0]
    extra_out = [c for c in set(started) | set(outcomes) if started[c] > 1 or outcomes[c] > 1]
    lost_results: list[str] = []
    for cid, e in issued.items():
        got = results[cid]
        if "DirectiveAccepted" not in got:
            continue
        kind = e.payload.action.action
        need = {
            ActionType.GATHER_STATE: {"StateGathered"},
            ActionType.UPDATE_INCIDENT_RECORD: {"IncidentRecordUpdated"},
            ActionType.VERIFY: {"VerificationSnapshot"},
        }.get(kind)
        if need is not None and not need & got:
            lost_results.append(f"{kind.value} {cid}")
        elif need is None and not {"StepStarted", "StepFailed"} & got:
            lost_results.append(f"accepted {kind.value} {cid} never started nor failed")
    stuck: list[str] = []
    for iid, (state, hold_start, packet_at) in _hold_starts(events).items():
        if not state.opened:
            continue
        if state.hold is not None:
            if hold_start is None or packet_at < hold_start:
                stuck.append(f"{iid}: on hold since #{hold_start} without a packet after it")
            continue
        open_work = [
            d.correlation_id
            for d in state.directives.values()
            if d.consequential
            and (
                d.status
                in (DirectiveStatus.ISSUED, DirectiveStatus.ACCEPTED, DirectiveStatus.STARTED)
                or (
                    d.status in (DirectiveStatus.SUCCEEDED, DirectiveStatus.OUTCOME_UNKNOWN)
                    and d.verdict is None
                )
            )
        ]
        if open_work:
            stuck.append(f"{iid}: not on hold, unverified consequential step(s) {open_work}")
    issues += [f"no decision: {c}" for c in missing_dec]
    issues += [f"no outcome: {c}" for c in missing_out]
    issues += [f"no result: {c}" for c in lost_results]
    issues += [f"stuck: {s}" for s in stuck]
    if strict:
        report.directives_issued = len(issued)
        report.missing_decisions = len(missing_dec)
        report.extra_decisions = len(extra_dec)
        report.missing_outcomes = len(missing_out)
        report.extra_outcomes = len(extra_out)
        report.lost_results = len(lost_results)
        report.stuck_incidents = len(stuck)
        report.duplicate_packets = sum(1 for n in packets.values() if n > 1)
        report.outcome_unknown = sum(1 for e in events if isinstance(e, StepOutcomeUnknown))
        report.holds = sum(s.holds_declared for s, _, _ in _hold_starts(events).values())
        issues += [f"more than one decision: {c}" for c in extra_dec]
        issues += [f"more than one StepStarted/outcome: {c}" for c in extra_out]
        for cid, e in issued.items():
            if e.payload.action.action in CONSEQUENTIAL_ACTIONS and started[cid] > 1:
                issues.append(f"started twice: {cid}")
    return issues


async def wait_quiescent(
    pipeline: Pipeline, config: ChaosConfig, report: ChaosReport, events_topic: str
) -> list[Envelope]:
    """Until nothing is open in the log and the topic stopped growing (bounded)."""
    trust = current().reader(pipeline.kafka_bootstrap, pipeline.topic_prefix)
    started = time.monotonic()
    end = started + config.quiesce_timeout
    last_size = -1
    stable_since = time.monotonic()
    events: list[Envelope] = []
    while True:
        raws = await read_topic(
            pipeline.kafka_bootstrap, events_topic, at_least=report.records_seen
        )
        report.records_seen = max(report.records_seen, len(raws))
        events, _ = decode_all(raws, trust)
        if len(raws) != last_size:
            last_size, stable_since = len(raws), time.monotonic()
        open_items = check_log(events, report, strict=False)
        if not open_items and time.monotonic() - stable_since >= 3.0:
            report.quiesced = True
            break
        if time.monotonic() > end:
            report.problems.append(
                f"not quiescent after {config.quiesce_timeout}s: {open_items[:5]}"
            )
            break
        await asyncio.sleep(1.0)
    report.quiesce_seconds = round(time.monotonic() - started, 1)
    return events


async def run_replay_tool(pipeline: Pipeline, report: ChaosReport, untrusted: int) -> None:
    """`conn replay` against the pipeline's topics and read model, as the SRE principal.
    It must prove the chain and the read model, and report exactly the `untrusted`
    (forged) records injected (exit 3), none folded."""
    env = {**os.environ, **pipeline.base_env(), **pipeline.identity_env("sre"), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conn_readmodel.replay",
        "--quiet",
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    text = out.decode(errors="replace").strip()
    report.replay_output = text[-2000:]
    expected = 3 if untrusted else 0
    reported = re.search(rf"\b{untrusted}\s+untrusted\b", text) is not None
    if proc.returncode != expected or not reported:
        report.replay_differences = max(1, report.replay_output.count("first differing"))
        report.problems.append(
            f"conn replay exit {proc.returncode} (expected {expected}, reporting {untrusted} "
            f"untrusted records): {report.replay_output[-600:]}"
        )


def check_side_effects(side: dict[str, int], events: list[Envelope], report: ChaosReport) -> None:
    issued = {e.correlation_id for e in events if isinstance(e, DirectiveIssued)}
    report.side_effects = sum(side.values())
    dup = {k: n for k, n in side.items() if n > 1}
    report.duplicate_side_effects = len(dup)
    for k, n in dup.items():
        report.problems.append(f"side effect {k} counted {n} times at the simulator")
    unexplained = [k for k in side if k.split("/")[0] not in issued]
    report.unexplained_side_effects = len(unexplained)
    for k in unexplained:
        report.problems.append(f"side effect with key {k!r} maps to no DirectiveIssued")


async def check_deadletters(
    pipeline: Pipeline, injector: Injector, report: ChaosReport, unreadable: list[Raw]
) -> None:
    raws = await read_topic(pipeline.kafka_bootstrap, injector.topics.deadletter)
    seen: dict[tuple[int, int], set[str]] = defaultdict(set)
    for r in raws:
        h = dict(r.headers)
        try:
            where = (int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))
        except (KeyError, ValueError):
            report.problems.append(f"dead letter without source headers at {r.offset}")
            continue
        seen[where].add(h.get("dlq.reason", b"").decode())
    hostile = {(p.partition, p.offset): h for h, p in injector.hostile_sent}
    for where, h in hostile.items():
        if h.reason not in seen.get(where, set()):
            report.hostile_not_deadlettered += 1
            report.problems.append(
                f"hostile record {h.label!r} at {where} not dead-lettered as {h.reason} "
                f"(got {sorted(seen.get(where, set()))})"
            )
    innocent = [w for w in seen if w not in hostile]
    report.innocent_deadlettered = len(innocent)
    for w in innocent:
        report.problems.append(f"record {w} dead-lettered but was not hostile: {seen[w]}")
    stray = [(r.partition, r.offset) for r in unreadable if (r.partition, r.offset) not in hostile]
    if stray:
        report.innocent_deadlettered += len(stray)
        report.problems.append(f"unreadable records nobody injected: {stray[:5]}")


# --- the run ----------------------------------------------------------------------------


async def run_chaos(
    pipeline: Pipeline, config: ChaosConfig, *, stack: dict[str, Any] | None = None
) -> ChaosReport:
    """Drive the workload under faults, quiesce, check. `stack` maps "kafka" /
    "postgres" to restart coroutines (absent: skipped, with stack["why"])."""
    report = ChaosReport(seed=config.seed)
    rng = random.Random(config.seed)
    console = Console()
    console.print(
        f"[bold]fault suite[/bold]: seed={config.seed} kills={config.kills} "
        f"workers={config.workers} (reproduce with CONN_CHAOS_SEED={config.seed})"
    )
    started = time.monotonic()
    workload = Workload(pipeline, config, report, rng)
    injector = Injector(pipeline, config, report, rng, workload, stack or {})
    work = asyncio.create_task(workload.run())
    try:
        await injector.run()
        await asyncio.wait_for(work, config.step_timeout * 3 + 60)
    finally:
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
        await injector.heal()
    events = await wait_quiescent(pipeline, config, report, injector.topics.events)
    raws = await read_topic(
        pipeline.kafka_bootstrap, injector.topics.events, at_least=report.records_seen
    )
    events, unreadable = decode_all(raws, injector.trust)
    _dump(pipeline, raws, injector.trust)
    issues = check_log(events, report, strict=True)
    report.problems += issues
    for e in events:
        if isinstance(e, DirectiveRefused):
            report.refusals[f"log:{e.payload.reason.value}"] += 1
    check_side_effects(await asyncio.to_thread(pipeline.side_effects), events, report)
    await check_deadletters(pipeline, injector, report, unreadable)
    await run_replay_tool(pipeline, report, sum(1 for h, _ in injector.hostile_sent if h.untrusted))
    report.duration_seconds = round(time.monotonic() - started, 1)
    report.notes += workload.log[:20]
    print_summary(report, console)
    return report


def _dump(pipeline: Pipeline, raws: list[Raw], trust: Trust) -> None:
    """The whole log, one line per record, next to the process logs (for post-mortems)."""
    path = pipeline.log_dir / "chaos-events.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in sorted(raws, key=lambda r: (r.partition, r.offset)):
        try:
            e = trust.open(_record(trust, r)).event
        except UnreadableRecord as exc:
            lines.append(f"{r.partition}@{r.offset} UNREADABLE {exc.reason}")
            continue
        extra = ""
        if isinstance(e, VerificationSnapshot):
            extra = f" verdict={e.payload.verdict.value} step={e.payload.step_correlation_id}"
        elif isinstance(e, DirectiveRefused):
            extra = f" reason={e.payload.reason.value} by={e.payload.refused_by}"
        elif isinstance(e, TakeoverPacketPublished):
            extra = f" ledger_sequence={e.payload.ledger_sequence} trigger={e.payload.trigger}"
        elif isinstance(e, DirectiveIssued):
            extra = f" action={e.payload.action.action.value}"
        lines.append(
            f"{r.partition}@{r.offset} {e.incident_id} {e.event_type} cid={e.correlation_id} "
            f"id={e.event_id} producer={e.producer}{extra}"
        )
    path.write_text("\n".join(lines) + "\n")


def print_summary(report: ChaosReport, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"fault suite summary (seed {report.seed})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("must be", justify="right")

    def row(name: str, value: object, must: str = "") -> None:
        bad = must == "0" and value != 0
        table.add_row(name, f"[red]{value}[/red]" if bad else str(value), must)

    for kind, n in sorted(report.faults.items()):
        row(f"faults: {kind}", n)
    row("faults injected (total)", report.faults_injected)
    row("incidents driven", report.incidents)
    row("directives issued (in the log)", report.directives_issued)
    row("side effects at the simulator", report.side_effects)
    row("holds derived", report.holds)
    row("steps reported OutcomeUnknown", report.outcome_unknown)
    row("duplicate side effects (keys counted >1)", report.duplicate_side_effects, "0")
    row("side effects with no directive", report.unexplained_side_effects, "0")
    row("same Idempotency-Key, different answer", report.duplicate_submission_mismatches, "0")
    row("events lost: conn replay differences", report.replay_differences, "0")
    row(
        "events lost: directives without one decision",
        report.missing_decisions + report.extra_decisions,
        "0",
    )
    row(
        "events lost: steps without one outcome",
        report.missing_outcomes + report.extra_outcomes,
        "0",
    )
    row("events lost: accepted work without result", report.lost_results, "0")
    row("incidents neither verified nor held with a packet", report.stuck_incidents, "0")
    row("hostile records not dead-lettered", report.hostile_not_deadlettered, "0")
    row("non-hostile records dead-lettered", report.innocent_deadlettered, "0")
    row("duplicate packets (same incident and ledger position)", report.duplicate_packets)
    row("quiescence wait (s)", report.quiesce_seconds)
    row("duration (s)", report.duration_seconds)
    for what, secs in report.downtime.items():
        row(f"{what} downtime (s)", secs)
    console.print(table)
    for line in report.skipped:
        console.print(f"[yellow]{line}[/yellow]")
    for line in report.problems[:30]:
        console.print(f"[red]problem:[/red] {line}")
    for line in report.notes[:10]:
        console.print(f"[dim]note: {line}[/dim]")
